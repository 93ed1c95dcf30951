package signature

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vectors is the shared folder of captures from the real clients.
const vectors = "../../../shared/vectors"

func vectorKey(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectors, "payload-secret.txt"))
	if err != nil {
		t.Fatalf("the captured client vectors (../shared/vectors, beside the repository) are missing: %v", err)
	}
	return Key(b)
}

func sign(key, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return prefix + hex.EncodeToString(mac.Sum(nil))
}

// requestVector is one captured POST /build: its body and X-Build-Signature.
type requestVector struct {
	name, header string
	body         []byte
}

// requestVectors finds every captured body.tar under requests/, including
// the ones nested in 2-POST-build folders.
func requestVectors(t *testing.T) []requestVector {
	t.Helper()
	var out []requestVector
	root := filepath.Join(vectors, "requests")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "body.tar" {
			return err
		}
		dir := filepath.Dir(p)
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(filepath.Join(dir, "headers.json"))
		if err != nil {
			return err
		}
		var h struct {
			Headers map[string][]string `json:"headers"`
		}
		if err := json.Unmarshal(raw, &h); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, dir)
		out = append(out, requestVector{rel, h.Headers["X-Build-Signature"][0], body})
		return nil
	})
	if err != nil {
		t.Fatalf("the captured client vectors (../shared/vectors, beside the repository) are missing: %v", err)
	}
	if len(out) < 10 {
		t.Fatalf("found %d request vectors, want at least 10", len(out))
	}
	return out
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%s not empty after error: %v", dir, entries)
	}
}

func TestSpoolVectors(t *testing.T) {
	key := vectorKey(t)
	for _, v := range requestVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			s, _, err := Spool(bytes.NewReader(v.body), v.header, [][]byte{key}, Options{Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := io.ReadAll(s.Reader())
			if err != nil {
				t.Fatal(err)
			}
			if s.Size() != int64(len(v.body)) || !bytes.Equal(got, v.body) {
				t.Errorf("spooled body differs: size %d, want %d", s.Size(), len(v.body))
			}
		})
	}
}

// The sealed-test payload.txt ends in a newline, which the key must not include.
func TestSpoolSealedTestVector(t *testing.T) {
	dir := filepath.Join(vectors, "faas-cli-sealed-test")
	secret, err := os.ReadFile(filepath.Join(dir, "payload.txt"))
	if err != nil {
		t.Fatalf("the captured client vectors (../shared/vectors, beside the repository) are missing: %v", err)
	}
	body, err := os.ReadFile(filepath.Join(dir, "request.tar"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "request-headers.json"))
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	header := h.Headers["X-Build-Signature"]

	tmp := t.TempDir()
	if _, _, err := Spool(bytes.NewReader(body), header, [][]byte{secret}, Options{Dir: tmp}); !errors.Is(err, ErrMismatch) {
		t.Errorf("untrimmed key: got %v, want ErrMismatch", err)
	}
	assertEmpty(t, tmp)

	s, _, err := Spool(bytes.NewReader(body), header, [][]byte{Key(secret)}, Options{Dir: tmp, Limit: int64(len(body))})
	if err != nil {
		t.Fatalf("trimmed key, limit = body size: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	assertEmpty(t, tmp)
}

func TestSpoolErrors(t *testing.T) {
	key := vectorKey(t)
	body, err := os.ReadFile(filepath.Join(vectors, "requests/01-faas-cli-publish-with-build-secrets/body.tar"))
	if err != nil {
		t.Fatal(err)
	}
	good := sign(key, body)
	flipped := bytes.Clone(body)
	flipped[len(flipped)/2] ^= 0x01

	tests := []struct {
		name   string
		body   []byte
		header string
		key    []byte
		limit  int64
		want   error
	}{
		{"missing header", body, "", key, 0, ErrMissing},
		{"sha1 prefix", body, "sha1=" + strings.Repeat("a", 40), key, 0, ErrMalformed},
		{"sha256 short", body, good[:len(good)-2], key, 0, ErrMalformed},
		{"sha256 long", body, good + "00", key, 0, ErrMalformed},
		{"non-hex", body, prefix + strings.Repeat("zz", 32), key, 0, ErrMalformed},
		{"no prefix", body, good[len(prefix):], key, 0, ErrMalformed},
		{"upper-case prefix", body, "SHA256=" + good[len(prefix):], key, 0, ErrMalformed},
		{"wrong key", body, good, []byte("not-the-secret"), 0, ErrMismatch},
		{"flipped body byte", flipped, good, key, 0, ErrMismatch},
		{"truncated body", body[:len(body)-1], good, key, 0, ErrMismatch},
		{"over limit", body, good, key, int64(len(body)) - 1, &TooLargeError{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			memory := NewMemory(1<<20, 1<<20)
			var teed bytes.Buffer
			s, _, err := Spool(bytes.NewReader(tc.body), tc.header, [][]byte{tc.key}, Options{Dir: dir, Limit: tc.limit, Memory: memory, Size: -1, Tee: &teed})
			if s != nil {
				s.Close()
				t.Fatal("got a Spooled on error")
			}
			var tooLarge *TooLargeError
			if _, wantTooLarge := tc.want.(*TooLargeError); wantTooLarge {
				if !errors.As(err, &tooLarge) || tooLarge.Limit != tc.limit {
					t.Errorf("got %v, want *TooLargeError{%d}", err, tc.limit)
				}
			} else if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			assertEmpty(t, dir)
			if used := memory.all.Used(); used != 0 {
				t.Errorf("%d bytes of memory still reserved", used)
			}
		})
	}
}

// A bad header must be rejected without consuming the body.
func TestSpoolFailsFastOnHeader(t *testing.T) {
	r := strings.NewReader("body")
	var teed bytes.Buffer
	if _, _, err := Spool(r, "sha1=x", [][]byte{nil}, Options{Dir: t.TempDir(), Tee: &teed}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
	if r.Len() != 4 || teed.Len() != 0 {
		t.Errorf("body was read before the header was checked")
	}
}

// random is n bytes that no two calls repeat.
func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// checkBody reads s whole and at a few offsets, and compares with want.
func checkBody(t *testing.T, s *Spooled, want []byte) {
	t.Helper()
	got, err := io.ReadAll(s.Reader())
	if err != nil || !bytes.Equal(got, want) || s.Size() != int64(len(want)) {
		t.Fatalf("body differs: %d bytes read (%v), size %d, want %d", len(got), err, s.Size(), len(want))
	}
	for _, off := range []int{0, 1, len(want) / 3, len(want) - 7} {
		if len(want) < 8 {
			break
		}
		p := make([]byte, 7)
		if n, err := s.ReadAt(p, int64(off)); n != 7 || (err != nil && err != io.EOF) || !bytes.Equal(p, want[off:off+7]) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
	}
	if n, err := s.ReadAt(make([]byte, 1), int64(len(want))); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt past the end = %d, %v", n, err)
	}
}

// Small bodies stay in memory while the budget allows, larger or later
// ones go to a file, and every byte reaches the tee and the store.
func TestSpoolMemoryAndFile(t *testing.T) {
	key := []byte("k")
	dir := t.TempDir()
	memory := NewMemory(1<<20, 1<<20+512<<10)
	spool := func(body []byte, size int64) (*Spooled, []byte) {
		t.Helper()
		var teed bytes.Buffer
		// A reader that hides its length, as a chunked request does.
		s, _, err := Spool(struct{ io.Reader }{bytes.NewReader(body)}, sign(key, body), [][]byte{key}, Options{Dir: dir, Memory: memory, Size: size, Tee: &teed})
		if err != nil {
			t.Fatal(err)
		}
		checkBody(t, s, body)
		return s, teed.Bytes()
	}
	files := func() int {
		entries, _ := os.ReadDir(dir)
		return len(entries)
	}

	small := random(t, 700<<10)
	first, teed := spool(small, -1)
	if first.OnDisk() || files() != 0 || !bytes.Equal(teed, small) {
		t.Fatalf("a 700 KiB body: on disk %v, %d files, tee got %d bytes", first.OnDisk(), files(), len(teed))
	}
	// The budget has 824 KiB left: the next 700 KiB body goes to a file.
	second, _ := spool(small, int64(len(small)))
	if !second.OnDisk() || files() != 1 {
		t.Fatalf("over the total: on disk %v, %d files", second.OnDisk(), files())
	}
	first.Close()
	second.Close()
	if files() != 0 || memory.all.Used() != 0 {
		t.Fatalf("after Close: %d files, %d bytes reserved", files(), memory.all.Used())
	}

	large := random(t, 3<<20)
	for _, size := range []int64{-1, int64(len(large))} { // grows past PerBody; announced past it
		s, teed := spool(large, size)
		if !s.OnDisk() || !bytes.Equal(teed, large) {
			t.Fatalf("a 3 MiB body (announced %d): on disk %v, tee got %d bytes", size, s.OnDisk(), len(teed))
		}
		s.Close()
	}
	empty, _ := spool(nil, 0)
	if empty.OnDisk() {
		t.Fatal("an empty body went to disk")
	}
	empty.Close()
	if files() != 0 || memory.all.Used() != 0 {
		t.Fatalf("at the end: %d files, %d bytes reserved", files(), memory.all.Used())
	}
}

func TestParseHeaderUpperHex(t *testing.T) {
	lower := strings.Repeat("ab", 32)
	a, err := ParseHeader(prefix + lower)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseHeader(prefix + strings.ToUpper(lower))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) || len(a) != sha256.Size {
		t.Errorf("upper and lower hex differ: %x %x", a, b)
	}
}

func TestKey(t *testing.T) {
	if got := Key([]byte(" \tabc=\r\n")); string(got) != "abc=" {
		t.Errorf("Key = %q", got)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add("")
	f.Add("sha256=" + strings.Repeat("0", 64))
	f.Add("sha256=45cfdf2c6909ecf635d75601d282168cbff4322d3c3ab19d112255b0bd5e9d2a")
	f.Add("sha256=45CFDF2C6909ECF635D75601D282168CBFF4322D3C3AB19D112255B0BD5E9D2A")
	f.Add("sha1=" + strings.Repeat("f", 40))
	f.Add("sha256=" + strings.Repeat("g", 64))
	f.Fuzz(func(t *testing.T, v string) {
		digest, err := ParseHeader(v)
		if err != nil {
			if digest != nil || !(errors.Is(err, ErrMissing) || errors.Is(err, ErrMalformed)) {
				t.Fatalf("ParseHeader(%q) = %x, %v", v, digest, err)
			}
			return
		}
		if len(digest) != sha256.Size || hex.EncodeToString(digest) != strings.ToLower(v[len(prefix):]) {
			t.Fatalf("ParseHeader(%q) = %x does not round-trip", v, digest)
		}
	})
}

func BenchmarkSpool(b *testing.B) {
	body := bytes.Repeat([]byte("fnbuilder"), (64<<20)/9+1)[:64<<20]
	key := []byte("bench-secret")
	header := sign(key, body)
	dir := b.TempDir()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		s, _, err := Spool(bytes.NewReader(body), header, [][]byte{key}, Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// A tenant is whoever holds a key: the index says whose key signed.
func TestSpoolFindsTheSigningKey(t *testing.T) {
	keys := [][]byte{[]byte("tenant-a"), []byte("tenant-b"), []byte("tenant-c")}
	body := []byte("the body")
	for want, key := range keys {
		s, got, err := Spool(bytes.NewReader(body), Sign(body, key), keys, Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatalf("key %d: %v", want, err)
		}
		s.Close()
		if got != want {
			t.Errorf("signed with key %d, Spool says %d", want, got)
		}
		if i, err := Verify(body, Sign(body, key), keys); err != nil || i != want {
			t.Errorf("Verify: key %d, %v; want %d", i, err, want)
		}
	}
	dir := t.TempDir()
	if _, i, err := Spool(bytes.NewReader(body), Sign(body, []byte("nobody")), keys, Options{Dir: dir}); !errors.Is(err, ErrMismatch) || i != -1 {
		t.Errorf("unknown key: %d, %v; want -1, ErrMismatch", i, err)
	}
	if _, err := Verify(body, Sign(body, []byte("nobody")), keys); !errors.Is(err, ErrMismatch) {
		t.Errorf("Verify with an unknown key: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused body left %d files", len(entries))
	}
}
