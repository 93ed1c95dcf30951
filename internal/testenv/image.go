package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Media types a registry may answer a manifest request with.
const (
	mediaOCIIndex     = "application/vnd.oci.image.index.v1+json"
	mediaOCIManifest  = "application/vnd.oci.image.manifest.v1+json"
	mediaDockerList   = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaDockerManif  = "application/vnd.docker.distribution.manifest.v2+json"
	manifestAcceptHdr = mediaOCIIndex + ", " + mediaDockerList + ", " + mediaOCIManifest + ", " + mediaDockerManif
)

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Manifests []descriptor `json:"manifests"` // index / manifest list
	Config    descriptor   `json:"config"`    // image manifest
	Layers    []descriptor `json:"layers"`
}

// Image is an image read from a Registry: its manifest, config and layers
// (decompressed tars, bottom first).
type Image struct {
	Ref      string
	Manifest []byte
	Config   []byte
	Layers   [][]byte
	// LayerDigests are the (compressed) layer digests, bottom first.
	LayerDigests []string
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

// ReadImage fetches repo:tag (tag may also be a digest) from reg. An index
// or manifest list resolves to linux/GOARCH, else linux/amd64, else its
// first manifest that is not an attestation.
func ReadImage(t testing.TB, reg *Registry, repo, tag string) *Image {
	t.Helper()
	img, err := readImage(reg, repo, tag)
	if err != nil {
		t.Fatalf("testenv: read image %s/%s:%s: %v", reg.Addr, repo, tag, err)
	}
	return img
}

func readImage(reg *Registry, repo, tag string) (*Image, error) {
	ref := tag
	img := &Image{Ref: fmt.Sprintf("%s/%s:%s", reg.Addr, repo, tag)}
	for depth := 0; ; depth++ {
		body, mt, err := get(reg, "/v2/"+repo+"/manifests/"+ref, manifestAcceptHdr)
		if err != nil {
			return nil, err
		}
		var m manifest
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("manifest: %v", err)
		}
		if m.MediaType == "" {
			m.MediaType = mt
		}
		if m.MediaType == mediaOCIIndex || m.MediaType == mediaDockerList || (len(m.Manifests) > 0 && m.Config.Digest == "") {
			if depth > 2 {
				return nil, errors.New("nested indexes")
			}
			d, err := pickManifest(m.Manifests)
			if err != nil {
				return nil, err
			}
			ref = d.Digest
			continue
		}
		img.Manifest = body
		if img.Config, err = blob(reg, repo, m.Config.Digest); err != nil {
			return nil, fmt.Errorf("config: %v", err)
		}
		for _, l := range m.Layers {
			raw, err := blob(reg, repo, l.Digest)
			if err != nil {
				return nil, fmt.Errorf("layer %s: %v", l.Digest, err)
			}
			tarball, err := decompress(raw)
			if err != nil {
				return nil, fmt.Errorf("layer %s (%s): %v", l.Digest, l.MediaType, err)
			}
			img.Layers = append(img.Layers, tarball)
			img.LayerDigests = append(img.LayerDigests, l.Digest)
		}
		return img, nil
	}
}

func pickManifest(ds []descriptor) (descriptor, error) {
	for _, arch := range []string{runtime.GOARCH, "amd64"} {
		for _, d := range ds {
			if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == arch {
				return d, nil
			}
		}
	}
	for _, d := range ds {
		if d.Platform == nil || d.Platform.OS != "unknown" { // skip attestation manifests
			return d, nil
		}
	}
	if len(ds) > 0 {
		return ds[0], nil
	}
	return descriptor{}, errors.New("empty index")
}

func get(reg *Registry, p, accept string) ([]byte, string, error) {
	req, err := http.NewRequest(http.MethodGet, reg.URL()+p, nil)
	if err != nil {
		return nil, "", err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: %s: %s", p, resp.Status, bytes.TrimSpace(b))
	}
	return b, resp.Header.Get("Content-Type"), nil
}

func blob(reg *Registry, repo, digest string) ([]byte, error) {
	b, _, err := get(reg, "/v2/"+repo+"/blobs/"+digest, "")
	if err != nil {
		return nil, err
	}
	if algo, want, ok := strings.Cut(digest, ":"); ok && algo == "sha256" {
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			return nil, fmt.Errorf("blob %s has digest sha256:%s", digest, got)
		}
	}
	return b, nil
}

// decompress accepts gzip or uncompressed tar layers.
func decompress(b []byte) ([]byte, error) {
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case len(b) >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd:
		return nil, errors.New("zstd layers are not supported by testenv")
	default:
		return b, nil
	}
}

// ImageConfig returns the raw image config JSON of repo:tag (history,
// env, labels, ...).
func ImageConfig(t testing.TB, reg *Registry, repo, tag string) []byte {
	t.Helper()
	return ReadImage(t, reg, repo, tag).Config
}

// ImageFile returns the content of path in repo:tag as the container would
// see it (topmost layer wins, whiteouts honoured, symlinks and hard links
// followed). A missing file fails the test; see LookupImageFile.
func ImageFile(t testing.TB, reg *Registry, repo, tag, path string) []byte {
	t.Helper()
	img := ReadImage(t, reg, repo, tag)
	b, ok, err := img.Lookup(path)
	if err != nil {
		t.Fatalf("testenv: %s in %s: %v", path, img.Ref, err)
	}
	if !ok {
		t.Fatalf("testenv: %s not found in %s", path, img.Ref)
	}
	return b
}

// LookupImageFile is ImageFile that reports a missing file instead of failing.
func LookupImageFile(t testing.TB, reg *Registry, repo, tag, path string) ([]byte, bool) {
	t.Helper()
	img := ReadImage(t, reg, repo, tag)
	b, ok, err := img.Lookup(path)
	if err != nil {
		t.Fatalf("testenv: %s in %s: %v", path, img.Ref, err)
	}
	return b, ok
}

// Lookup returns the content of a regular file in the image's merged
// filesystem. Symlinks are followed only for the last path element.
func (img *Image) Lookup(p string) ([]byte, bool, error) {
	return img.lookup(cleanPath(p), 0)
}

func cleanPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

func (img *Image) lookup(p string, hops int) ([]byte, bool, error) {
	if hops > 40 {
		return nil, false, errors.New("too many levels of symbolic links")
	}
	for i := len(img.Layers) - 1; i >= 0; i-- {
		tr := tar.NewReader(bytes.NewReader(img.Layers[i]))
		hidden := false // a whiteout in this layer hides lower layers
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, false, fmt.Errorf("layer %d: %v", i, err)
			}
			name := cleanPath(h.Name)
			dir, base := path.Dir(name), path.Base(name)
			if dir == "." {
				dir = ""
			}
			switch {
			case name == p:
				switch h.Typeflag {
				case tar.TypeReg, tar.TypeRegA:
					b, err := io.ReadAll(tr)
					return b, true, err
				case tar.TypeSymlink:
					target := h.Linkname
					if !path.IsAbs(target) {
						target = path.Join("/", path.Dir(p), target)
					}
					return img.lookup(cleanPath(target), hops+1)
				case tar.TypeLink:
					return img.lookup(cleanPath(h.Linkname), hops+1)
				case tar.TypeDir:
					return nil, false, fmt.Errorf("%s is a directory", p)
				default:
					return nil, false, fmt.Errorf("%s is not a regular file (tar type %q)", p, h.Typeflag)
				}
			case base == ".wh..wh..opq":
				if dir == "" || strings.HasPrefix(p, dir+"/") {
					hidden = true
				}
			case strings.HasPrefix(base, ".wh."):
				gone := path.Join(dir, strings.TrimPrefix(base, ".wh."))
				if gone == p || strings.HasPrefix(p, gone+"/") {
					hidden = true
				}
			}
		}
		if hidden {
			return nil, false, nil
		}
	}
	return nil, false, nil
}

// FindInImage returns where needle occurs in repo:tag: "manifest",
// "config", and "layer N:PATH" for file contents, link targets and names
// in every layer (including files a later layer deleted).
func FindInImage(t testing.TB, reg *Registry, repo, tag string, needle []byte) []string {
	t.Helper()
	if len(needle) == 0 {
		t.Fatalf("testenv: FindInImage with an empty needle")
	}
	img := ReadImage(t, reg, repo, tag)
	var hits []string
	if bytes.Contains(img.Manifest, needle) {
		hits = append(hits, "manifest")
	}
	if bytes.Contains(img.Config, needle) {
		hits = append(hits, "config")
	}
	for i, l := range img.Layers {
		tr := tar.NewReader(bytes.NewReader(l))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("testenv: %s layer %d: %v", img.Ref, i, err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("testenv: %s layer %d: %v", img.Ref, i, err)
			}
			meta := h.Name + "\x00" + h.Linkname
			for k, v := range h.PAXRecords {
				meta += "\x00" + k + "=" + v
			}
			if bytes.Contains(b, needle) || strings.Contains(meta, string(needle)) {
				hits = append(hits, fmt.Sprintf("layer %d:%s", i, h.Name))
			}
		}
		if bytes.Contains(l, needle) && !hasLayerHit(hits, i) {
			hits = append(hits, fmt.Sprintf("layer %d:(tar bytes)", i))
		}
	}
	return hits
}

func hasLayerHit(hits []string, i int) bool {
	prefix := fmt.Sprintf("layer %d:", i)
	for _, h := range hits {
		if strings.HasPrefix(h, prefix) {
			return true
		}
	}
	return false
}
