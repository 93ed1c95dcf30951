package buildtar

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tonistiigi/fsutil"
	"github.com/tonistiigi/fsutil/types"
)

// FS serves an indexed context to BuildKit straight from the tar's bytes:
// it is the fsutil.FS of a LocalMount. What it reports about each entry is
// exactly what BuildKit needs and nothing the client chose: permission
// bits as an unpack would keep them, owner 0:0, and mtimes derived from
// the content (contentTime). Symlinks are reported, never followed.
type FS struct {
	tree *Tree
	body io.ReaderAt
	root int32 // the directory served as the root
}

var _ fsutil.FS = (*FS)(nil)

// Serve returns the context's files read from body, which must hold the
// very bytes the tree was indexed from, and stay open while it is used.
func (t *Tree) Serve(body io.ReaderAt) *FS {
	return &FS{tree: t, body: body}
}

// Sub serves the directory dir (relative to this FS) as a root of its own.
func (f *FS) Sub(dir string) (fsutil.FS, error) {
	i, rel := f.resolve(dir)
	if i == noNode {
		return nil, &fs.PathError{Op: "open", Path: rel, Err: fs.ErrNotExist}
	}
	if f.tree.nodes[i].kind != kindDir {
		return nil, &fs.PathError{Op: "open", Path: rel, Err: syscall.ENOTDIR}
	}
	return &FS{tree: f.tree, body: f.body, root: i}, nil
}

// resolve finds target below the root, as fsutil paths name it ("/",
// "a/b", "./a"); it returns the cleaned relative path too.
func (f *FS) resolve(target string) (int32, string) {
	rel := strings.TrimLeft(path.Clean("/"+filepath.ToSlash(target)), "/")
	return f.tree.lookupFrom(f.root, rel), rel
}

// Walk calls fn for target and everything below it in lexical order, as
// filepath.WalkDir does, with paths relative to the root; the root
// itself is not reported. fn's fs.SkipDir and fs.SkipAll work as there.
func (f *FS) Walk(ctx context.Context, target string, fn fs.WalkDirFunc) error {
	start, rel := f.resolve(target)
	if start == noNode {
		// As fsutil's own FS: the callback sees the error, and a missing
		// target is an empty walk.
		err := fn(filepath.FromSlash(rel), nil, &fs.PathError{Op: "lstat", Path: rel, Err: fs.ErrNotExist})
		if err == nil || errors.Is(err, fs.ErrNotExist) || err == filepath.SkipDir || err == filepath.SkipAll {
			return nil
		}
		return err
	}
	w := &walker{FS: f, ctx: ctx, fn: fn, firstName: map[int32]string{}}
	var err error
	if start == f.root {
		err = w.walkKids(start, "")
	} else {
		err = w.walk(start, rel)
	}
	if err == filepath.SkipDir || err == filepath.SkipAll {
		return nil
	}
	return err
}

type walker struct {
	*FS
	ctx context.Context
	fn  fs.WalkDirFunc
	// firstName is, per file, the first of its names this walk reported;
	// its other names are reported as hard links to it, as fsutil does
	// for an inode it has seen.
	firstName map[int32]string
}

func (w *walker) walk(i int32, rel string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	err := w.fn(filepath.FromSlash(rel), &fsutil.DirEntryInfo{Stat: w.stat(i, rel)}, nil)
	if w.tree.nodes[i].kind != kindDir {
		return err
	}
	if err == filepath.SkipDir {
		return nil
	}
	if err != nil {
		return err
	}
	return w.walkKids(i, rel)
}

func (w *walker) walkKids(dir int32, rel string) error {
	for _, k := range w.tree.nodes[dir].kids {
		p := w.tree.nodes[k].name
		if rel != "" {
			p = rel + "/" + p
		}
		if err := w.walk(k, p); err != nil {
			if err == filepath.SkipDir { // a file skips the rest of its directory
				return nil
			}
			return err
		}
	}
	return nil
}

func (w *walker) stat(i int32, rel string) *types.Stat {
	n := &w.tree.nodes[i]
	st := &types.Stat{Path: filepath.FromSlash(rel)}
	switch n.kind {
	case kindDir:
		st.Mode, st.ModTime = uint32(os.ModeDir|0o755), timeBase
	case kindSymlink:
		st.Mode, st.Size, st.Linkname, st.ModTime = uint32(os.ModeSymlink|0o777), int64(len(n.link)), n.link, n.mtime
	default:
		file := w.tree.fileOf(i)
		fn := &w.tree.nodes[file]
		st.Mode, st.Size, st.ModTime = fn.perm, fn.size, fn.mtime
		if first, seen := w.firstName[file]; seen {
			st.Linkname = filepath.FromSlash(first)
		} else {
			w.firstName[file] = rel
		}
	}
	return st
}

// Open reads a regular file's bytes from the tar.
func (f *FS) Open(name string) (io.ReadCloser, error) {
	i, rel := f.resolve(name)
	if i == noNode {
		return nil, &fs.PathError{Op: "open", Path: rel, Err: fs.ErrNotExist}
	}
	switch f.tree.nodes[i].kind {
	case kindFile, kindHardlink:
	case kindDir:
		return nil, &fs.PathError{Op: "open", Path: rel, Err: syscall.EISDIR}
	default:
		return nil, &fs.PathError{Op: "open", Path: rel, Err: syscall.ELOOP}
	}
	n := &f.tree.nodes[f.tree.fileOf(i)]
	if n.dataAt >= 0 {
		return io.NopCloser(io.NewSectionReader(f.body, n.dataAt, n.size)), nil
	}
	// Sparse: archive/tar fills the holes, from the same header as when
	// the tree was indexed.
	tr := tar.NewReader(io.NewSectionReader(f.body, n.headerAt, math.MaxInt64-n.headerAt))
	hdr, err := tr.Next()
	if err != nil || hdr.Size != n.size {
		return nil, fmt.Errorf("open %s: the tar no longer holds the indexed entry", rel)
	}
	return io.NopCloser(tr), nil
}
