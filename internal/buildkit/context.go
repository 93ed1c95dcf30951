package buildkit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"

	"github.com/tonistiigi/fsutil"
)

// Context is what BuildKit reads a build's files from: the "context"
// local mount, and through Sub the directory that holds the Dockerfile
// (the "dockerfile" mount). build-fn serves a request's tar
// (buildtar.FS); Dir serves a directory.
type Context interface {
	fsutil.FS
	Sub(dir string) (fsutil.FS, error)
}

// Dir is a build context in a directory on this machine.
type Dir string

var _ Context = Dir("")

func (d Dir) Walk(ctx context.Context, target string, fn fs.WalkDirFunc) error {
	f, err := fsutil.NewFS(string(d))
	if err != nil {
		return err
	}
	return f.Walk(ctx, target, fn)
}

func (d Dir) Open(p string) (io.ReadCloser, error) {
	f, err := fsutil.NewFS(string(d))
	if err != nil {
		return nil, err
	}
	return f.Open(p)
}

func (d Dir) Sub(dir string) (fsutil.FS, error) {
	return fsutil.NewFS(filepath.Join(string(d), dir))
}

// SharedKey is the Build.SharedKey for a tenant's image. BuildKit keeps one
// incremental copy of a local context per key and sends a build only the
// files whose metadata differ from it, so the key is where one request's
// files could meet another's: each tenant and image repository gets its
// own, and no request is ever compared with another tenant's or another
// repository's files. It is a digest of both, unambiguous whatever
// characters they hold.
func SharedKey(tenant, image string) string {
	sum := sha256.Sum256([]byte(strconv.Quote(tenant) + " " + strconv.Quote(Repository(image))))
	return "fnbuilder-" + hex.EncodeToString(sum[:16])
}
