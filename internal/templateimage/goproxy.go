package templateimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// serveGoproxy serves this machine's module cache, filled for the
// checkout's go.mod, in GOPROXY layout on Goproxy until stop is called.
func (b Builder) serveGoproxy(ctx context.Context) (url string, stop func(), err error) {
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return "", nil, fmt.Errorf("go env GOMODCACHE: %v", err)
	}
	download := exec.CommandContext(ctx, "go", "mod", "download")
	download.Dir = b.Repo
	if o, err := download.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("go mod download: %v\n%s", err, o)
	}
	l, err := net.Listen("tcp", b.Goproxy)
	if err != nil {
		return "", nil, fmt.Errorf("GOPROXY for the build (is another build of this kind running?): %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(modcache)), "cache", "download")
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return "http://" + l.Addr().String(), func() { srv.Close() }, nil
}

// treeDigest is a digest of the paths, modes and contents of a build
// context as BuildKit receives it: what its .dockerignore leaves out
// (local binaries, tests no function imports) cannot change the image.
func treeDigest(dir string) (string, error) {
	ignored, err := dockerignore(dir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if skip, err := ignored.MatchesOrParentMatches(rel); err != nil {
			return err
		} else if skip {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %o\n", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// dockerignore is what the .dockerignore in dir leaves out of a build
// context laid out there (nothing when there is none).
func dockerignore(dir string) (*patternmatcher.PatternMatcher, error) {
	var patterns []string
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s/.dockerignore: %w", dir, err)
		}
	}
	m, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf("%s/.dockerignore: %w", dir, err)
	}
	return m, nil
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
