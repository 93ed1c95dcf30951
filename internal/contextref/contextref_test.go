package contextref_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/contextref"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

var goodDigest = digestOf([]byte("x"))

func TestParseValid(t *testing.T) {
	for _, url := range []string{"http://example.com/ctx.tar", "https://r.example:5000/v2/x/blobs/" + goodDigest} {
		body := `{"url":"` + url + `","digest":"` + goodDigest + `"}`
		ref, err := contextref.Parse(strings.NewReader(body))
		if err != nil {
			t.Fatalf("Parse(%s): %v", body, err)
		}
		if ref.URL != url || ref.Digest != goodDigest {
			t.Fatalf("Parse(%s) = %+v", body, ref)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	for name, body := range map[string]string{
		"not json":        `{"url":`,
		"empty":           ``,
		"unknown field":   `{"url":"http://h/x","digest":"sha256:` + hex64 + `","size":3}`,
		"ftp":             `{"url":"ftp://h/x","digest":"sha256:` + hex64 + `"}`,
		"file":            `{"url":"file:///etc/passwd","digest":"sha256:` + hex64 + `"}`,
		"relative":        `{"url":"/ctx.tar","digest":"sha256:` + hex64 + `"}`,
		"no host":         `{"url":"http:///ctx.tar","digest":"sha256:` + hex64 + `"}`,
		"missing url":     `{"digest":"sha256:` + hex64 + `"}`,
		"missing digest":  `{"url":"http://h/x"}`,
		"no algorithm":    `{"url":"http://h/x","digest":"` + hex64 + `"}`,
		"sha512":          `{"url":"http://h/x","digest":"sha512:` + hex64 + `"}`,
		"short hex":       `{"url":"http://h/x","digest":"sha256:` + hex64[:62] + `"}`,
		"long hex":        `{"url":"http://h/x","digest":"sha256:` + hex64 + `00"}`,
		"not hex":         `{"url":"http://h/x","digest":"sha256:` + strings.Repeat("zz", 32) + `"}`,
		"uppercase hex":   `{"url":"http://h/x","digest":"sha256:` + strings.ToUpper(hex64) + `"}`,
		"digest is array": `{"url":"http://h/x","digest":["sha256:` + hex64 + `"]}`,
	} {
		if _, err := contextref.Parse(strings.NewReader(body)); !errors.Is(err, contextref.ErrInvalid) {
			t.Errorf("%s: Parse(%s) error %v, want ErrInvalid", name, body, err)
		}
	}
}

// server serves body at /ctx.tar with the given status; chunked hides the
// Content-Length.
func server(t *testing.T, status int, body []byte, chunked bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if status != http.StatusOK {
			http.Error(w, http.StatusText(status), status)
			return
		}
		if !chunked {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.WriteHeader(http.StatusOK)
		for len(body) > 0 {
			n := min(len(body), 1000)
			w.Write(body[:n])
			body = body[n:]
			if chunked {
				w.(http.Flusher).Flush()
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("%d files left in %s, first %s", len(entries), dir, entries[0].Name())
	}
}

func fetch(t *testing.T, srv *httptest.Server, digest, dir string, limit int64) (*contextref.Fetched, error) {
	t.Helper()
	return contextref.Fetch(context.Background(), srv.Client(), contextref.Ref{URL: srv.URL + "/ctx.tar", Digest: digest}, dir, limit)
}

func TestFetchGood(t *testing.T) {
	payload := bytes.Repeat([]byte("tar bytes "), 500)
	for _, chunked := range []bool{false, true} {
		srv, _ := server(t, http.StatusOK, payload, chunked)
		dir := t.TempDir()
		f, err := fetch(t, srv, digestOf(payload), dir, int64(len(payload)))
		if err != nil {
			t.Fatalf("chunked=%v: %v", chunked, err)
		}
		for range 2 { // each Reader starts at the beginning
			got, err := io.ReadAll(f.Reader())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("chunked=%v: read %d bytes, want the %d served", chunked, len(got), len(payload))
			}
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Fatalf("want the fetched file in dir, got %d entries", len(entries))
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		assertEmpty(t, dir)
	}
}

func TestFetchDigestMismatch(t *testing.T) {
	payload := []byte("the real bytes")
	srv, _ := server(t, http.StatusOK, payload, false)
	dir := t.TempDir()
	f, err := fetch(t, srv, digestOf([]byte("other bytes")), dir, 0)
	if !errors.Is(err, contextref.ErrDigestMismatch) || f != nil {
		t.Fatalf("Fetch = %v, %v; want ErrDigestMismatch", f, err)
	}
	assertEmpty(t, dir)
}

func TestFetchTooLarge(t *testing.T) {
	payload := bytes.Repeat([]byte("z"), 5000)
	for _, chunked := range []bool{false, true} {
		srv, _ := server(t, http.StatusOK, payload, chunked)
		dir := t.TempDir()
		f, err := fetch(t, srv, digestOf(payload), dir, 4999)
		var tooLarge *contextref.TooLargeError
		if !errors.As(err, &tooLarge) || f != nil {
			t.Fatalf("chunked=%v: Fetch = %v, %v; want *TooLargeError", chunked, f, err)
		}
		if tooLarge.Limit != 4999 {
			t.Fatalf("limit %d in error", tooLarge.Limit)
		}
		assertEmpty(t, dir)
	}
	// Exactly at the limit is fine.
	srv, _ := server(t, http.StatusOK, payload, true)
	f, err := fetch(t, srv, digestOf(payload), t.TempDir(), 5000)
	if err != nil {
		t.Fatalf("body of exactly the limit: %v", err)
	}
	f.Close()
}

func TestFetchStatus(t *testing.T) {
	for _, tc := range []struct {
		code      int
		transient bool
	}{
		{http.StatusNotFound, false},
		{http.StatusForbidden, false},
		{http.StatusUnauthorized, false},
		{http.StatusTooManyRequests, true},
		{http.StatusInternalServerError, true},
		{http.StatusBadGateway, true},
		{http.StatusServiceUnavailable, true},
	} {
		srv, hits := server(t, tc.code, nil, false)
		dir := t.TempDir()
		f, err := fetch(t, srv, goodDigest, dir, 0)
		var st *contextref.StatusError
		if !errors.As(err, &st) || f != nil {
			t.Fatalf("%d: Fetch = %v, %v; want *StatusError", tc.code, f, err)
		}
		if st.Code != tc.code || st.Transient() != tc.transient {
			t.Errorf("%d: StatusError %+v transient=%v, want transient=%v", tc.code, st, st.Transient(), tc.transient)
		}
		if !strings.Contains(err.Error(), strconv.Itoa(tc.code)) {
			t.Errorf("%d: error %q does not name the status", tc.code, err)
		}
		if hits.Load() != 1 {
			t.Errorf("%d: server hit %d times", tc.code, hits.Load())
		}
		assertEmpty(t, dir)
	}
}

func TestFetchConnectionError(t *testing.T) {
	srv, _ := server(t, http.StatusOK, nil, false)
	url := srv.URL
	srv.Close()
	dir := t.TempDir()
	_, err := contextref.Fetch(context.Background(), http.DefaultClient, contextref.Ref{URL: url + "/x", Digest: goodDigest}, dir, 0)
	if err == nil {
		t.Fatal("fetch from a closed server succeeded")
	}
	var st *contextref.StatusError
	if errors.As(err, &st) {
		t.Fatalf("connection error reported as status: %v", err)
	}
	assertEmpty(t, dir)
}

func TestFetchCancelled(t *testing.T) {
	srv, _ := server(t, http.StatusOK, []byte("x"), false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	_, err := contextref.Fetch(ctx, srv.Client(), contextref.Ref{URL: srv.URL, Digest: goodDigest}, dir, 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	assertEmpty(t, dir)
}
