package testenv

import (
	"archive/tar"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// ConfigName is the build config's entry name in a request tar.
const ConfigName = "com.openfaas.docker.config"

// TarEntry is one entry of a hand-made tar: the header is written as is, so
// a test may set any field of it. Raw, when set, is written instead, as is
// (whole 512-byte blocks): for entries archive/tar refuses to write.
type TarEntry struct {
	Header tar.Header
	Body   string
	Raw    []byte
}

// File is a regular file (0644) holding body.
func File(name, body string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}, Body: body}
}

// Dir is a directory (0755).
func Dir(name string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}}
}

// Symlink is a symbolic link to target.
func Symlink(name, target string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Linkname: target, Mode: 0o777, Typeflag: tar.TypeSymlink}}
}

// Hardlink is a hard link to target, an earlier entry's full tar name.
func Hardlink(name, target string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Linkname: target, Mode: 0o644, Typeflag: tar.TypeLink}}
}

// ConfigEntry is the build config (com.openfaas.docker.config) holding cfg
// as JSON.
func ConfigEntry(t testing.TB, cfg map[string]any) TarEntry {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return File(ConfigName, string(data))
}

// BuildTar writes entries, in order, as one tar stream.
func BuildTar(t testing.TB, entries ...TarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if e.Raw != nil {
			if err := tw.Flush(); err != nil {
				t.Fatal(err)
			}
			buf.Write(e.Raw)
			continue
		}
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// WriteContextTar writes dir as a client tars a function's folder: every
// entry under context/ (directories, files, symlinks; a file's second name
// as a hard link to its first), then the build config, and ends the archive.
func WriteContextTar(w io.Writer, dir string, config []byte) error {
	tw := tar.NewWriter(w)
	inodes := map[uint64]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		link, _ := os.Readlink(p)
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = path.Join("context", filepath.ToSlash(rel))
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, seen := inodes[st.Ino]; seen {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				inodes[st.Ino] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil || hdr.Typeflag != tar.TypeReg {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: ConfigName, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(config))}); err != nil {
		return err
	}
	if _, err := tw.Write(config); err != nil {
		return err
	}
	return tw.Close()
}

// HeaderBlocks is what archive/tar writes for h (a PAX header first when h
// needs one) without the data h announces: a header claiming a terabyte,
// or one to patch.
func HeaderBlocks(t testing.TB, h tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(&h); err != nil {
		t.Fatalf("tar header %q: %v", h.Name, err)
	}
	return buf.Bytes()
}

// SparseRun is one stretch of data in a sparse file; the rest are holes.
type SparseRun struct {
	At   int64
	Data string
}

// GNUSparse is an old-GNU sparse entry (type 'S') whose full size is size
// and whose only stored bytes are the runs (at most 4): archive/tar reads
// such entries but does not write their sparse map.
func GNUSparse(t testing.TB, name string, size int64, runs ...SparseRun) TarEntry {
	t.Helper()
	var data []byte
	for _, r := range runs {
		data = append(data, r.Data...)
	}
	h := HeaderBlocks(t, tar.Header{Name: name, Typeflag: tar.TypeGNUSparse, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatGNU})
	for i, r := range runs {
		tarNumber(h[386+24*i:398+24*i], r.At)
		tarNumber(h[398+24*i:410+24*i], int64(len(r.Data)))
	}
	tarNumber(h[483:495], size)
	TarChecksum(h)
	raw := append(h, data...)
	return TarEntry{Header: tar.Header{Name: name}, Raw: append(raw, make([]byte, (512-len(data)%512)%512)...)}
}

// tarNumber writes a tar number field: octal, or base-256 when too big.
func tarNumber(field []byte, v int64) {
	if s := strconv.FormatInt(v, 8); len(s) < len(field) {
		copy(field, fmt.Sprintf("%0*s\x00", len(field)-1, s))
		return
	}
	for i := len(field) - 1; i > 0; i-- {
		field[i] = byte(v)
		v >>= 8
	}
	field[0] = 0x80
}

// TarChecksum sets the checksum of the 512-byte header block h, after a
// test changed a field.
func TarChecksum(h []byte) {
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h[:512] {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// Signer signs what is written to it as a client does, independently of
// internal/signature (the code under test): "sha256=" and the hex
// HMAC-SHA256 under the payload secret. N counts the bytes.
type Signer struct {
	mac hash.Hash
	N   int64
}

// NewSigner is a Signer under key.
func NewSigner(key []byte) *Signer { return &Signer{mac: hmac.New(sha256.New, key)} }

func (s *Signer) Write(p []byte) (int, error) {
	s.N += int64(len(p))
	return s.mac.Write(p)
}

// Signature is the X-Build-Signature of what was written.
func (s *Signer) Signature() string { return "sha256=" + hex.EncodeToString(s.mac.Sum(nil)) }

// Sign is the X-Build-Signature of body under the payload secret key.
func Sign(key, body []byte) string {
	s := NewSigner(key)
	s.Write(body)
	return s.Signature()
}

// SignedHeader is the header of a build request for body signed with key;
// ndjson asks for the streamed (NDJSON) reply.
func SignedHeader(key, body []byte, ndjson bool) http.Header {
	h := http.Header{}
	h.Set("X-Build-Signature", Sign(key, body))
	h.Set("Content-Type", "application/octet-stream")
	if ndjson {
		h.Set("Accept", "application/x-ndjson")
	}
	return h
}
