package testenv

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// readImage fetches repo:tag (tag may also be a digest) from reg; an index
// resolves to linux/GOARCH.
func readImage(t testing.TB, reg *Registry, repo, tag string) (string, v1.Image) {
	t.Helper()
	ref := reg.Addr + "/" + repo + ":" + tag
	if strings.Contains(tag, ":") {
		ref = reg.Addr + "/" + repo + "@" + tag
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: %s: %v", ref, err)
	}
	img, err := remote.Image(r, append(reg.RemoteOptions(t), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))...)
	if err != nil {
		t.Fatalf("testenv: read image %s: %v", ref, err)
	}
	return ref, img
}

// TagExists asks reg whether repo:tag was pushed.
func TagExists(t testing.TB, reg *Registry, repo, tag string) bool {
	t.Helper()
	r, err := name.NewRepository(reg.Addr + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r, reg.RemoteOptions(t)...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return false // no such repository
	}
	if err != nil {
		t.Fatalf("testenv: tags of %s: %v", r, err)
	}
	return slices.Contains(tags, tag)
}

// ImageConfig returns the raw image config JSON of repo:tag (history,
// env, labels, ...).
func ImageConfig(t testing.TB, reg *Registry, repo, tag string) []byte {
	t.Helper()
	ref, img := readImage(t, reg, repo, tag)
	b, err := img.RawConfigFile()
	if err != nil {
		t.Fatalf("testenv: config of %s: %v", ref, err)
	}
	return b
}

// ImageFile returns the content of path in repo:tag as the container would
// see it (topmost layer wins, whiteouts honoured, symlinks and hard links
// followed). A missing file fails the test; see LookupImageFile.
func ImageFile(t testing.TB, reg *Registry, repo, tag, path string) []byte {
	t.Helper()
	b, ok := LookupImageFile(t, reg, repo, tag, path)
	if !ok {
		t.Fatalf("testenv: %s not found in %s/%s:%s", path, reg.Addr, repo, tag)
	}
	return b
}

// LookupImageFile is ImageFile that reports a missing file instead of
// failing. Symlinks are followed only for the last path element.
func LookupImageFile(t testing.TB, reg *Registry, repo, tag, p string) ([]byte, bool) {
	t.Helper()
	ref, img := readImage(t, reg, repo, tag)
	headers, bodies := map[string]*tar.Header{}, map[string][]byte{}
	rc := mutate.Extract(img) // the merged filesystem
	defer rc.Close()
	EachEntry(t, ref, rc, func(h *tar.Header, body []byte) {
		headers[cleanPath(h.Name)], bodies[cleanPath(h.Name)] = h, body
	})
	p = cleanPath(p)
	for hops := 0; hops < 40; hops++ {
		h, ok := headers[p]
		switch {
		case !ok:
			return nil, false
		case h.Typeflag == tar.TypeReg:
			return bodies[p], true
		case h.Typeflag == tar.TypeSymlink && path.IsAbs(h.Linkname):
			p = cleanPath(h.Linkname)
		case h.Typeflag == tar.TypeSymlink:
			p = cleanPath(path.Join(path.Dir(p), h.Linkname))
		case h.Typeflag == tar.TypeLink:
			p = cleanPath(h.Linkname)
		default:
			t.Fatalf("testenv: %s in %s is not a regular file (tar type %q)", p, ref, h.Typeflag)
		}
	}
	t.Fatalf("testenv: %s in %s: too many levels of links", p, ref)
	return nil, false
}

// EachEntry calls f with every entry of the tar stream r and its bytes;
// what names r in a failure.
func EachEntry(t testing.TB, what string, r io.Reader, f func(h *tar.Header, body []byte)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("testenv: %s: %v", what, err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("testenv: %s: %v", what, err)
		}
		f(h, body)
	}
}

func cleanPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// FindInImage returns where needle occurs in repo:tag: "manifest",
// "config", and "layer N:PATH" for file contents, link targets and names
// in every layer (including files a later layer deleted).
func FindInImage(t testing.TB, reg *Registry, repo, tag string, needle []byte) []string {
	t.Helper()
	if len(needle) == 0 {
		t.Fatalf("testenv: FindInImage with an empty needle")
	}
	ref, img := readImage(t, reg, repo, tag)
	var hits []string
	for _, part := range []struct {
		name string
		raw  func() ([]byte, error)
	}{{"manifest", img.RawManifest}, {"config", img.RawConfigFile}} {
		b, err := part.raw()
		if err != nil {
			t.Fatalf("testenv: %s %s: %v", ref, part.name, err)
		}
		if bytes.Contains(b, needle) {
			hits = append(hits, part.name)
		}
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatalf("testenv: %s: %v", ref, err)
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatalf("testenv: %s layer %d: %v", ref, i, err)
		}
		raw, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("testenv: %s layer %d: %v", ref, i, err)
		}
		found := false
		EachEntry(t, fmt.Sprintf("%s layer %d", ref, i), bytes.NewReader(raw), func(h *tar.Header, b []byte) {
			meta := h.Name + "\x00" + h.Linkname
			for k, v := range h.PAXRecords {
				meta += "\x00" + k + "=" + v
			}
			if bytes.Contains(b, needle) || strings.Contains(meta, string(needle)) {
				hits, found = append(hits, fmt.Sprintf("layer %d:%s", i, h.Name)), true
			}
		})
		if !found && bytes.Contains(raw, needle) {
			hits = append(hits, fmt.Sprintf("layer %d:(tar bytes)", i))
		}
	}
	return hits
}
