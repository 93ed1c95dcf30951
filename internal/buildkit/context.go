package buildkit

import (
	"context"
	"io"
	"io/fs"
	"path/filepath"

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

// ReadFile reads at most max bytes of the file name (slash-separated) in c.
func ReadFile(c Context, name string, max int64) ([]byte, error) {
	f, err := c.Open(filepath.FromSlash(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
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
