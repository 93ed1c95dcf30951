package hardening

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/contextref"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestIntakeAttacks sends what a client without the payload secret can
// send (bodies it holds open, slowly), and a signed context reference
// whose server redirects inwards, to build-fn on the template's server
// with real buildkitd and registry. Each refusal has a twin that builds.
func TestIntakeAttacks(t *testing.T) {
	s := startStack(t)
	limits := map[string]string{
		"max_inflight": "1", "max_request_bytes": "1048576", "max_unverified_bytes": "2097152", "upload_timeout": "3s",
		// Bodies go to work_dir, where the tests watch them arrive.
		"spool_memory_bytes": "0",
	}
	t.Run("unsigned uploads keep no signed build out", func(t *testing.T) { testUnsignedUploads(t, s, limits) })
	t.Run("unverified budget full", func(t *testing.T) { testBudgetFull(t, s, limits) })
	t.Run("context reference redirected to loopback", func(t *testing.T) { testRedirectInwards(t, s) })
}

// heldUpload is a connection that declared a body and sent part of it.
type heldUpload struct{ conn net.Conn }

// holdUpload declares length bytes, sends first, and sends no more. Its
// signature is well formed, made without the payload secret.
func holdUpload(t *testing.T, b *builder, length int, first []byte) *heldUpload {
	t.Helper()
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST /build HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nX-Build-Signature: %s\r\n\r\n",
		u.Host, length, testenv.Sign([]byte("not the payload secret"), first))
	if _, err := conn.Write(append([]byte(head), first...)); err != nil {
		t.Fatal(err)
	}
	return &heldUpload{conn: conn}
}

// status reads the reply to a held upload.
func (h *heldUpload) status(t *testing.T) int {
	t.Helper()
	_ = h.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(h.conn), nil)
	if err != nil {
		t.Fatalf("no reply to a held upload: %v", err)
	}
	res.Body.Close()
	return res.StatusCode
}

// spooledBytes sums the sizes of the request bodies in work_dir.
func (b *builder) spooledBytes(t *testing.T) (files int, size int64) {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(b.workDir, "fnbuilder-body-*"))
	for _, m := range matches {
		if info, err := os.Stat(m); err == nil {
			files++
			size += info.Size()
		}
	}
	return files, size
}

// waitSpooledBytes waits for the spooled bodies to add up to size bytes.
func (b *builder) waitSpooledBytes(t *testing.T, size int64) {
	t.Helper()
	testenv.WaitFor(t, fmt.Sprintf("%d bytes to be spooled", size), func() error {
		if _, got := b.spooledBytes(t); got != size {
			return fmt.Errorf("%d bytes spooled", got)
		}
		return nil
	})
}

func testUnsignedUploads(t *testing.T, s *stack, limits map[string]string) {
	b := s.builderOn(t, limits)
	const attackers, sent = 16, 64 << 10
	var held []*heldUpload
	for range attackers {
		held = append(held, holdUpload(t, b, 1<<20, []byte(strings.Repeat("u", sent))))
	}
	testenv.WaitFor(t, "the unsigned uploads to be spooled", func() error {
		if files, size := b.spooledBytes(t); files != attackers || size != attackers*sent {
			return fmt.Errorf("%d files, %d bytes", files, size)
		}
		return nil
	})
	// Sixteen clients each declaring 1 MiB hold 1 MiB of the 2 MiB
	// budget between them, and no slot: a signed build goes through.
	body := buildTar(t, "FROM "+s.Base+"\nRUN echo beside-unsigned\n", s.Reg.Addr+"/intake-beside-unsigned:1")
	fin, logs := final(t, testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(b.keys.payload, body, true)))
	if fin.Status != "success" || !testenv.TagExists(t, s.Reg, "intake-beside-unsigned", "1") {
		t.Fatalf("signed build beside the unsigned uploads: %+v\n%s", fin, logs)
	}
	if files, _ := b.spooledBytes(t); files != attackers {
		t.Fatalf("%d unsigned uploads still held after the signed build, want %d", files, attackers)
	}
	for i, h := range held {
		if code := h.status(t); code != http.StatusRequestTimeout {
			t.Fatalf("held upload %d: %d, want 408 at upload_timeout", i, code)
		}
	}
	b.workDirEmpty(t)
	if n := b.Runs.Load(); n != 1 {
		t.Fatalf("%d solves, want 1 (the signed build)", n)
	}
}

func testBudgetFull(t *testing.T, s *stack, limits map[string]string) {
	b := s.builderOn(t, limits)
	const sent = 1000 << 10
	first := holdUpload(t, b, 1<<20, []byte(strings.Repeat("a", sent)))
	b.waitSpooledBytes(t, sent)
	second := holdUpload(t, b, 1<<20, []byte(strings.Repeat("b", sent)))
	b.waitSpooledBytes(t, 2*sent)

	body := buildTar(t, "FROM "+s.Base+"\nRUN echo budget\n", s.Reg.Addr+"/intake-budget:1",
		testenv.File("context/pad", strings.Repeat("p", 200<<10)))
	res := testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(b.keys.payload, body, true))
	if testenv.Status(res) != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Fatalf("signed build while the budget is held: %d Retry-After %q, want 503 with it", testenv.Status(res), res.Header.Get("Retry-After"))
	}
	if msg := errorBody(t, res); !strings.Contains(msg, "retry later") {
		t.Fatalf("503 error %q", msg)
	}
	if code := first.status(t); code != http.StatusRequestTimeout {
		t.Fatalf("first held upload: %d, want 408", code)
	}
	if code := second.status(t); code != http.StatusRequestTimeout {
		t.Fatalf("second held upload: %d, want 408", code)
	}
	b.workDirEmpty(t)
	if n := b.Runs.Load(); n != 0 {
		t.Fatalf("%d solves before the budget was free", n)
	}
	fin, logs := final(t, testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(b.keys.payload, body, true)))
	if fin.Status != "success" {
		t.Fatalf("the same build once the budget is free: %+v\n%s", fin, logs)
	}
}

func testRedirectInwards(t *testing.T, s *stack) {
	b := s.builderOn(t, nil)
	image := s.Reg.Addr + "/intake-ref:1"
	tar := buildTar(t, "FROM "+s.Base+"\nRUN echo by-reference\n", image)
	inner := testenv.ServeContext(t, tar)
	origin := testenv.ServeContext(t, tar)
	post := func(refURL string) *http.Response {
		ref, _ := json.Marshal(contextref.Ref{URL: refURL, Digest: sha256Of(tar)})
		header := testenv.SignedHeader(b.keys.payload, ref, true)
		header.Set("Content-Type", contextref.MediaType)
		return testenv.Post(t, b.url+"/build", ref, header)
	}

	res := post(origin.URL + "/to?token=s3cr3t&where=" + url.QueryEscape(inner.URL+"/ctx.tar?sig=s3cr3t"))
	if testenv.Status(res) != http.StatusBadRequest {
		data, _ := io.ReadAll(res.Body)
		t.Fatalf("redirect to another loopback server: %d %s, want 400", testenv.Status(res), data)
	}
	msg := errorBody(t, res)
	if !strings.Contains(msg, "loopback") || strings.Contains(msg, "s3cr3t") {
		t.Fatalf("refusal %q: want the reason and no query string", msg)
	}
	if inner.Hits.Load() != 0 || b.Runs.Load() != 0 {
		t.Fatalf("the redirect target was reached %d times, %d solves", inner.Hits.Load(), b.Runs.Load())
	}
	b.workDirEmpty(t)

	// Twin: the reference's own loopback server builds.
	fin, logs := final(t, post(origin.URL+"/ctx.tar?token=s3cr3t"))
	if fin.Status != "success" || fin.Image != image || !testenv.TagExists(t, s.Reg, "intake-ref", "1") {
		t.Fatalf("reference on its own loopback server: %+v\n%s", fin, logs)
	}
	b.workDirEmpty(t)
}

func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
