// Package signature verifies the X-Build-Signature of a build request while
// receiving its body: small bodies stay in memory within a budget, larger
// ones go to a temporary file, and nothing is kept unless the HMAC-SHA256
// over the exact bytes matches.
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

	"github.com/fnbuilder/fnbuilder/internal/budget"
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

// Spooled is a request body received in full: in memory when it is small
// and Options.Memory allows, in a temporary file otherwise.
type Spooled struct {
	mem    []byte
	file   *os.File
	size   int64
	memory *Memory // what mem is charged to
}

// Size is the body length in bytes.
func (s *Spooled) Size() int64 { return s.size }

// ReadAt reads the body at off; it is safe for concurrent use.
func (s *Spooled) ReadAt(p []byte, off int64) (int, error) {
	if s.file != nil {
		return s.file.ReadAt(p, off)
	}
	return bytes.NewReader(s.mem).ReadAt(p, off)
}

// Reader reads the body from its start. Each call returns an independent reader.
func (s *Spooled) Reader() io.Reader { return io.NewSectionReader(s, 0, s.size) }

// OnDisk says whether the body went to a temporary file.
func (s *Spooled) OnDisk() bool { return s.file != nil }

// Close releases the body: its memory, or its temporary file, which it
// removes. It is safe to call more than once.
func (s *Spooled) Close() error {
	if s.mem != nil {
		s.memory.release(int64(cap(s.mem)))
		s.mem = nil
	}
	if s.file == nil {
		return nil
	}
	name := s.file.Name()
	err := s.file.Close()
	s.file = nil
	return errors.Join(err, os.Remove(name))
}

// Memory bounds the bodies kept in memory instead of a temporary file:
// each one up to PerBody bytes, all of them together up to Total, so that
// many uploads at once (signed or not) cannot exhaust the builder.
type Memory struct {
	PerBody int64
	all     budget.Bytes
}

// NewMemory makes a budget for bodies of up to perBody bytes, total in all.
func NewMemory(perBody, total int64) *Memory {
	return &Memory{PerBody: perBody, all: budget.Bytes{Max: total}}
}

// Total is what all bodies in memory may hold together.
func (m *Memory) Total() int64 { return m.all.Max }

func (m *Memory) reserve(n int64) bool { return m.all.Take(n) }

func (m *Memory) release(n int64) {
	if m != nil {
		m.all.Give(n)
	}
}

// Options says where and how a body is received.
type Options struct {
	// Dir holds the temporary file of a body that is not kept in memory.
	Dir string
	// Limit refuses a body longer than this many bytes with
	// *TooLargeError; zero or less means no limit.
	Limit int64
	// Memory keeps small bodies in memory; nil spools every body to Dir.
	Memory *Memory
	// Size is the announced length (Content-Length), or -1 when unknown.
	// It only sizes the memory reserved; the bytes read are what count.
	Size int64
	// Tee, when set, is given every byte of the body as it is received,
	// so that a consumer (the tar index) reads the body while the MAC is
	// computed. Tee.Write must not keep p and must not fail: its error is
	// ignored. Nothing it learns may be acted on unless Spool succeeds.
	Tee io.Writer
}

// chunkSize and chunks bound the memory one receive uses for buffers.
const (
	chunkSize = 256 << 10
	chunks    = 4
)

var chunkPool = sync.Pool{New: func() any {
	c := make([]byte, chunkSize)
	return &c
}}

// Spool receives body while computing its HMAC-SHA256 under each of keys,
// and returns it with the index of the key whose MAC equals the one in
// header. The header is checked before any body byte is read, so unsigned
// requests are rejected cheaply. The MACs are computed in their own
// goroutines while the body is stored and teed, so a receive costs about
// the time of the MACs alone. On any error nothing is left behind.
func Spool(body io.Reader, header string, keys [][]byte, o Options) (*Spooled, int, error) {
	want, err := ParseHeader(header)
	if err != nil {
		return nil, -1, err
	}
	macs := newMACs(keys)
	s, err := spool(body, macs, o)
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
func SpoolUnverified(body io.Reader, o Options) (*Spooled, error) {
	return spool(body, nil, o)
}

func spool(body io.Reader, mac io.Writer, o Options) (_ *Spooled, err error) {
	st := &store{o: o}
	defer func() {
		if err != nil {
			st.discard()
		}
	}()
	if !st.inMemory() {
		// A body bound for the disk has its file from the start.
		if err := st.toFile(); err != nil {
			return nil, err
		}
	}
	src := body
	if o.Limit > 0 {
		// One byte past the limit is enough to tell "exactly limit" from "more".
		src = io.LimitReader(body, o.Limit+1)
	}

	// The MAC runs behind the store: each chunk goes to it once stored
	// and teed, and comes back to free once hashed. Chunks come from a
	// pool, one more only while the MAC lags behind: a small body takes one.
	free := make(chan []byte, chunks)
	taken := 0
	next := func() []byte {
		select {
		case c := <-free:
			return c
		default:
		}
		if taken < chunks {
			taken++
			return *chunkPool.Get().(*[]byte)
		}
		return <-free
	}
	var toMAC chan []byte
	macDone := make(chan struct{})
	if mac != nil {
		toMAC = make(chan []byte, chunks)
		go func() {
			defer close(macDone)
			for c := range toMAC {
				mac.Write(c)
				free <- c[:cap(c)]
			}
		}()
	}
	defer func() {
		if mac != nil {
			close(toMAC)
			<-macDone
		}
		for range taken {
			c := <-free
			chunkPool.Put(&c)
		}
	}()

	for {
		// Whatever has arrived goes on at once, so that a body held
		// half-sent is stored (and counted) as far as it came.
		buf := next()
		n, rerr := src.Read(buf)
		if n > 0 {
			c := buf[:n]
			if err := st.write(c); err != nil {
				free <- buf
				return nil, err
			}
			if o.Tee != nil {
				_, _ = o.Tee.Write(c)
			}
		}
		if mac != nil && n > 0 {
			toMAC <- buf[:n]
		} else {
			free <- buf
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("spool body: %w", rerr)
		}
	}
	if o.Limit > 0 && st.size > o.Limit {
		return nil, &TooLargeError{Limit: o.Limit}
	}
	return st.spooled(), nil
}

// store keeps a body in memory while the Memory budget allows, and moves
// it to a temporary file once it does not.
type store struct {
	o        Options
	mem      []byte
	reserved int64
	file     *os.File
	size     int64
}

func (st *store) write(p []byte) error {
	st.size += int64(len(p))
	if st.file == nil && st.toMemory(len(p)) {
		st.mem = append(st.mem, p...)
		return nil
	}
	if err := st.toFile(); err != nil {
		return err
	}
	if _, err := st.file.Write(p); err != nil {
		return fmt.Errorf("spool body: %w", err)
	}
	return nil
}

// inMemory says whether the body may stay in memory, as far as its
// announced size tells.
func (st *store) inMemory() bool {
	return st.o.Memory != nil && st.o.Size <= st.o.Memory.PerBody
}

// toFile moves the body to its temporary file, once.
func (st *store) toFile() error {
	if st.file != nil {
		return nil
	}
	f, err := os.CreateTemp(st.o.Dir, "fnbuilder-body-*")
	if err != nil {
		return fmt.Errorf("spool body: %w", err)
	}
	st.file = f
	if _, err := f.Write(st.mem); err != nil {
		return fmt.Errorf("spool body: %w", err)
	}
	st.o.Memory.release(st.reserved)
	st.mem, st.reserved = nil, 0
	return nil
}

// toMemory reserves room for n more bytes in memory if the budget allows:
// the announced size at once, else growing by doubling.
func (st *store) toMemory(n int) bool {
	m := st.o.Memory
	need := int64(len(st.mem) + n)
	if m == nil || need > m.PerBody || st.o.Size > m.PerBody {
		return false
	}
	if need <= st.reserved {
		return true
	}
	grow := min(max(need, 2*st.reserved, 64<<10, st.o.Size), m.PerBody)
	if !m.reserve(grow - st.reserved) {
		return false
	}
	mem := make([]byte, len(st.mem), grow)
	copy(mem, st.mem)
	st.mem, st.reserved = mem, grow
	return true
}

func (st *store) spooled() *Spooled {
	if st.file != nil {
		return &Spooled{file: st.file, size: st.size}
	}
	return &Spooled{mem: st.mem, size: st.size, memory: st.o.Memory}
}

func (st *store) discard() {
	st.o.Memory.release(st.reserved)
	st.mem, st.reserved = nil, 0
	if st.file != nil {
		st.file.Close()
		os.Remove(st.file.Name())
		st.file = nil
	}
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
