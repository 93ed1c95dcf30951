package handlers_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

func withUnverified(max int64, uploadTimeout time.Duration) option {
	return func(o *handlers.BuildOptions) {
		o.Unverified = handlers.NewUnverifiedBudget(max)
		o.UploadTimeout = uploadTimeout
	}
}

// rawUpload is a client on its own connection that sends a request's
// headers and as much of its body as the test says, like an attacker
// holding uploads open.
type rawUpload struct {
	t    *testing.T
	conn net.Conn
}

// startUpload declares length bytes and sends first. The signature is
// well formed but made without the payload secret.
func (f *fixture) startUpload(length int, first []byte) *rawUpload {
	f.t.Helper()
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST /build HTTP/1.1\r\nHost: build-fn\r\nContent-Type: application/octet-stream\r\n"+
		"Content-Length: %d\r\nX-Build-Signature: %s\r\n\r\n", length, testenv.Sign([]byte("not the payload secret"), []byte("not this body")))
	if _, err := conn.Write(append([]byte(head), first...)); err != nil {
		f.t.Fatal(err)
	}
	return &rawUpload{t: f.t, conn: conn}
}

// response reads the reply the server sent on the connection.
func (u *rawUpload) response() (*http.Response, []byte) {
	u.t.Helper()
	_ = u.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(u.conn), nil)
	if err != nil {
		u.t.Fatalf("no reply on the upload's connection: %v", err)
	}
	data, _ := io.ReadAll(res.Body)
	return res, data
}

func (f *fixture) waitHeld(want int64) {
	f.t.Helper()
	waitValue(f.t, "unverified bytes held", want, f.opts.Unverified.Held)
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// chunked makes req send its body without a Content-Length.
func chunked(req *http.Request) *http.Request {
	req.Body = io.NopCloser(struct{ io.Reader }{req.Body})
	req.ContentLength = -1
	req.GetBody = nil
	return req
}

// TestUnsignedUploadsCannotKeepSignedBuildsOut: twenty clients without
// the payload secret declare big bodies, send a little and hold their
// connections. They hold only what they sent, and no slot: a signed build
// still goes through while they wait.
func TestUnsignedUploadsCannotKeepSignedBuildsOut(t *testing.T) {
	f := newFixture(t, nil, withSlots(1), withUnverified(1<<20, time.Minute))
	const attackers, sent = 20, 1 << 10
	var uploads []*rawUpload
	for range attackers {
		uploads = append(uploads, f.startUpload(512<<10, randomBytes(t, sent)))
	}
	f.waitHeld(attackers * sent)

	if res, data := f.post(makeTar(t), ""); res.StatusCode != http.StatusOK {
		t.Fatalf("signed build beside %d unsigned uploads: %d %s", attackers, res.StatusCode, data)
	}
	// The attackers were still there all along.
	if held := f.opts.Unverified.Held(); held != attackers*sent {
		t.Fatalf("%d bytes held after the signed build, want the attackers' %d", held, attackers*sent)
	}
	for _, u := range uploads {
		u.conn.Close()
	}
	f.waitHeld(0)
	waitEmpty(t, f.opts.SpoolDir)
}

// TestUnverifiedBudgetFull: when unverified bodies hold the budget, a
// request is told 503 with Retry-After, at once if its length is declared,
// and builds once the budget is free again.
func TestUnverifiedBudgetFull(t *testing.T) {
	f := newFixture(t, nil, withUnverified(256<<10, time.Minute))
	// Each declares a little more than it sends; the second's declared
	// length fits beside what the first has sent.
	a := f.startUpload(101<<10, randomBytes(t, 100<<10))
	f.waitHeld(100 << 10)
	b := f.startUpload(101<<10, randomBytes(t, 100<<10))
	f.waitHeld(200 << 10)

	big := makeTar(t, testenv.File("context/blob", string(randomBytes(t, 100<<10))))
	before := f.bytesReceived()
	res, data := f.post(big, "")
	e := checkErrorReply(t, res, data, http.StatusServiceUnavailable)
	if res.Header.Get("Retry-After") == "" || !strings.Contains(e.Error, "retry later") {
		t.Fatalf("503 without Retry-After or reason: %q %q", res.Header.Get("Retry-After"), e.Error)
	}
	if got := f.bytesReceived(); got != before {
		t.Fatalf("the refused body was read: %v bytes", got-before)
	}

	// Without a declared length the body is read until it does not fit.
	res = f.do(chunked(f.request(nil, http.MethodPost, big, "")))
	data, _ = io.ReadAll(res.Body)
	checkErrorReply(t, res, data, http.StatusServiceUnavailable)
	f.waitHeld(200 << 10)
	// A small one fits beside the attackers, declared or not.
	res = f.do(chunked(f.request(nil, http.MethodPost, makeTar(t), "")))
	if data, _ := io.ReadAll(res.Body); res.StatusCode != http.StatusOK {
		t.Fatalf("small chunked build: %d %s", res.StatusCode, data)
	}

	a.conn.Close()
	f.waitHeld(100 << 10)
	if res, data := f.post(big, ""); res.StatusCode != http.StatusOK {
		t.Fatalf("big build once the budget has room: %d %s", res.StatusCode, data)
	}
	b.conn.Close()
	f.waitHeld(0)
	waitEmpty(t, f.opts.SpoolDir)
}

// TestSlowUploadIsCut: a body that trickles in a byte at a time is cut at
// upload_timeout with 408, even when the server's own write timeout has
// passed by then, and gives back what it held.
func TestSlowUploadIsCut(t *testing.T) {
	const uploadTimeout = 500 * time.Millisecond
	// A build that outlasts the upload deadline, for the control below.
	slow := func(ctx context.Context, _ buildkit.Build, logf func([]string)) error {
		select {
		case <-time.After(2 * uploadTimeout):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := startFixture(t, slow, func(s *http.Server) { s.WriteTimeout = 200 * time.Millisecond },
		withUnverified(1<<20, uploadTimeout))
	u := f.startUpload(64<<10, randomBytes(t, 1<<10))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if _, err := u.conn.Write([]byte{'x'}); err != nil {
					return
				}
			}
		}
	}()
	res, data := u.response()
	e := checkErrorReply(t, res, data, http.StatusRequestTimeout)
	if !strings.Contains(e.Error, uploadTimeout.String()) {
		t.Fatalf("408 does not say the limit: %q", e.Error)
	}
	f.waitHeld(0)
	waitEmpty(t, f.opts.SpoolDir)
	if n := f.runner.calls.Load(); n != 0 {
		t.Fatalf("runner called %d times", n)
	}
	// A body that arrives in time builds, and its build is not cut by
	// the upload deadline.
	if res, data := f.post(makeTar(t), ndjson); res.StatusCode != http.StatusOK {
		t.Fatalf("signed build: %d %s", res.StatusCode, data)
	} else {
		checkFinal(t, ndjsonLines(t, data), progress.Success)
	}
}

// TestUnverifiedBytesGivenBack: whatever becomes of a request, the bytes
// its body took are given back.
func TestUnverifiedBytesGivenBack(t *testing.T) {
	f := newFixture(t, nil, withUnverified(1<<20, time.Minute), func(o *handlers.BuildOptions) { o.MaxBodyBytes = 200 << 10 })
	body := makeTar(t)

	if res, data := f.post(body, ""); res.StatusCode != http.StatusOK {
		t.Fatalf("signed: %d %s", res.StatusCode, data)
	}
	f.waitHeld(0)

	req := f.request(nil, http.MethodPost, body, "")
	req.Header.Set("X-Build-Signature", testenv.Sign([]byte("not the payload secret"), body))
	res := f.do(req)
	data, _ := io.ReadAll(res.Body)
	checkErrorReply(t, res, data, http.StatusUnauthorized)
	f.waitHeld(0)

	u := f.startUpload(100<<10, randomBytes(t, 10<<10))
	f.waitHeld(10 << 10)
	u.conn.Close()
	f.waitHeld(0)

	res = f.do(chunked(f.request(nil, http.MethodPost, bytes.Repeat([]byte("x"), 300<<10), "")))
	data, _ = io.ReadAll(res.Body)
	checkErrorReply(t, res, data, http.StatusRequestEntityTooLarge)
	f.waitHeld(0)
	waitEmpty(t, f.opts.SpoolDir)
}
