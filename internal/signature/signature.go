// Package signature verifies the X-Build-Signature of a build request while
// spooling its body to a temporary file. The body is never held in memory, and
// nothing is left on disk unless the HMAC-SHA256 over the exact bytes matches.
package signature

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
)

const prefix = "sha256="

var (
	// ErrMissing means the request carried no signature.
	ErrMissing = errors.New("missing X-Build-Signature")
	// ErrMalformed means the signature is not "sha256=" followed by 64 hex digits.
	ErrMalformed = errors.New("malformed X-Build-Signature: want sha256=<64 hex digits>")
	// ErrMismatch means the body does not match the signature for this key.
	ErrMismatch = errors.New("X-Build-Signature does not match the body")
)

// TooLargeError reports a body longer than the spool limit.
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("request body exceeds %d bytes", e.Limit)
}

// ParseHeader returns the 32-byte digest from a "sha256=<hex>" header value.
// Only sha256 is accepted: no client sends anything else (wire protocol 3.2).
func ParseHeader(v string) ([]byte, error) {
	if v == "" {
		return nil, ErrMissing
	}
	hexDigest, ok := strings.CutPrefix(v, prefix)
	if !ok || len(hexDigest) != 2*sha256.Size {
		return nil, ErrMalformed
	}
	digest, err := hex.DecodeString(hexDigest)
	if err != nil {
		return nil, ErrMalformed
	}
	return digest, nil
}

// Key turns the payload secret file into the HMAC key. Clients trim the file
// they read and use the text as is (not base64-decoded), so we do the same.
func Key(secretFileContent []byte) []byte {
	return bytes.TrimSpace(secretFileContent)
}

// Spooled is a verified request body stored in a temporary file.
type Spooled struct {
	file *os.File
	size int64
}

// Size is the body length in bytes.
func (s *Spooled) Size() int64 { return s.size }

// Reader reads the body from its start. Each call returns an independent reader.
func (s *Spooled) Reader() io.Reader { return io.NewSectionReader(s.file, 0, s.size) }

// Close closes and removes the temporary file. It is safe to call more than once.
func (s *Spooled) Close() error {
	if s.file == nil {
		return nil
	}
	name := s.file.Name()
	err := s.file.Close()
	s.file = nil
	return errors.Join(err, os.Remove(name))
}

// copyBufSize bounds the memory used per request while spooling.
const copyBufSize = 64 << 10

// Spool copies body into a new temporary file in dir while computing its
// HMAC-SHA256 under each of keys, and returns the file and the index of the
// key whose MAC equals the one in header. The header is checked before any
// body byte is read, so unsigned requests are rejected cheaply. A body
// longer than limit (when limit > 0) gives *TooLargeError. On any error the
// temporary file has been removed.
func Spool(body io.Reader, header string, keys [][]byte, dir string, limit int64) (*Spooled, int, error) {
	want, err := ParseHeader(header)
	if err != nil {
		return nil, -1, err
	}
	macs := newMACs(keys)
	s, err := spool(body, macs, dir, limit)
	if err != nil {
		return nil, -1, err
	}
	if i := macs.match(want); i >= 0 {
		return s, i, nil
	}
	s.Close()
	return nil, -1, ErrMismatch
}

// macs computes HMAC-SHA256 under several keys at once (one per tenant),
// the keys spread over the CPUs so that many tenants cost less time than
// their number.
type macs struct {
	all    []hash.Hash
	groups [][]hash.Hash // one per goroutine
}

func newMACs(keys [][]byte) *macs {
	m := &macs{}
	for _, key := range keys {
		m.all = append(m.all, hmac.New(sha256.New, key))
	}
	n := min(len(m.all), runtime.GOMAXPROCS(0))
	for i := range n {
		var g []hash.Hash
		for j := i; j < len(m.all); j += n {
			g = append(g, m.all[j])
		}
		m.groups = append(m.groups, g)
	}
	return m
}

func (m *macs) Write(p []byte) (int, error) {
	if len(m.groups) == 0 {
		return len(p), nil // no key: nothing can match
	}
	var wg sync.WaitGroup
	for _, g := range m.groups[1:] {
		wg.Go(func() { writeAll(g, p) })
	}
	writeAll(m.groups[0], p)
	wg.Wait()
	return len(p), nil
}

func writeAll(hs []hash.Hash, p []byte) {
	for _, h := range hs {
		h.Write(p)
	}
}

// match is the index of the MAC equal to want, or -1. Every MAC is
// compared, in constant time, so the time taken says nothing of which.
func (m *macs) match(want []byte) int {
	found := -1
	for i, h := range m.all {
		if hmac.Equal(h.Sum(nil), want) && found < 0 {
			found = i
		}
	}
	return found
}

// SpoolUnverified stores body like Spool but checks no signature at all. It
// is only for a builder run with disable_hmac, where clients may send any
// X-Build-Signature or none.
func SpoolUnverified(body io.Reader, dir string, limit int64) (*Spooled, error) {
	return spool(body, io.Discard, dir, limit)
}

func spool(body io.Reader, mac io.Writer, dir string, limit int64) (_ *Spooled, err error) {
	f, err := os.CreateTemp(dir, "fnbuilder-body-*")
	if err != nil {
		return nil, fmt.Errorf("spool body: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()

	src := body
	if limit > 0 {
		// One byte past the limit is enough to tell "exactly limit" from "more".
		src = io.LimitReader(body, limit+1)
	}
	n, err := io.CopyBuffer(io.MultiWriter(f, mac), src, make([]byte, copyBufSize))
	if err != nil {
		return nil, fmt.Errorf("spool body: %w", err)
	}
	if limit > 0 && n > limit {
		return nil, &TooLargeError{Limit: limit}
	}
	return &Spooled{file: f, size: n}, nil
}

// Verify checks a signature over a small message held in memory, such as
// the call id of a result fetch, and returns the index of the key that
// made it.
func Verify(msg []byte, header string, keys [][]byte) (int, error) {
	want, err := ParseHeader(header)
	if err != nil {
		return -1, err
	}
	macs := newMACs(keys)
	macs.Write(msg)
	if i := macs.match(want); i >= 0 {
		return i, nil
	}
	return -1, ErrMismatch
}

// Sign is the header value for msg: "sha256=" and the hex HMAC-SHA256.
func Sign(msg, key []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(msg)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
