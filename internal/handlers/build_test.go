package handlers_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/metrics"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const (
	testImage    = "127.0.0.1:5000/fnbuilder/test-fn:0.1"
	payloadText  = "pay-load-secret-0123456789"
	ndjson       = "application/x-ndjson"
	maxWireLine  = 64 << 10
	secretValue  = "npm-tok-9f8e7d6c5b4a"
	failureError = `failed to solve: process "/bin/sh -c npm i" did not complete successfully: exit code: 1`
)

// fakeRunner stands in for BuildKit.
type fakeRunner struct {
	run   func(ctx context.Context, b buildkit.Build, logf func([]string)) error
	calls atomic.Int32
}

func (f *fakeRunner) Run(ctx context.Context, b buildkit.Build, logf func([]string)) (string, error) {
	f.calls.Add(1)
	if f.run == nil {
		logf([]string{"v: 2025-06-13T20:16:16Z [internal] load build definition from Dockerfile"})
		return fakeDigest, nil
	}
	if err := f.run(ctx, b, logf); err != nil {
		return "", err
	}
	return fakeDigest, nil
}

// fakeDigest is the digest every successful fake build pushes.
const fakeDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func emit(lines ...string) func(context.Context, buildkit.Build, func([]string)) error {
	return func(_ context.Context, _ buildkit.Build, logf func([]string)) error {
		logf(lines)
		return nil
	}
}

// fixture is one build-fn instance over httptest.
type fixture struct {
	t      *testing.T
	srv    *httptest.Server
	opts   handlers.BuildOptions
	runner *fakeRunner
	ring   *secrets.KeyRing
	pub    []byte
}

type option func(*handlers.BuildOptions)

func newFixture(t *testing.T, run func(context.Context, buildkit.Build, func([]string)) error, opts ...option) *fixture {
	return startFixture(t, run, nil, opts...)
}

func startFixture(t *testing.T, run func(context.Context, buildkit.Build, func([]string)) error, configure func(*http.Server), opts ...option) *fixture {
	t.Helper()
	kp, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := secrets.NewKeyRing(kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "payload-secret")
	// Clients trim the secret file; so must the server.
	if err := os.WriteFile(secretFile, []byte("  "+payloadText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runner := &fakeRunner{run: run}
	o := handlers.BuildOptions{
		Pipeline: &pipeline.Pipeline{
			Keys:   func() (*secrets.KeyRing, error) { return ring, nil },
			Runner: runner,
		},
		Metrics:      metrics.New(),
		Tenants:      oneTenant(func() ([]byte, error) { return os.ReadFile(secretFile) }),
		SpoolDir:     t.TempDir(),
		MaxBodyBytes: 10 << 20,
		Timeout:      time.Minute,
	}
	for _, opt := range opts {
		opt(&o)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/build", handlers.MakeBuildHandler(o))
	mux.HandleFunc("/ready", handlers.MakeReadyHandler(o.Slots))
	mux.Handle("/metrics", o.Metrics.Handler())
	srv := httptest.NewUnstartedServer(mux)
	if configure != nil {
		configure(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return &fixture{t: t, srv: srv, opts: o, runner: runner, ring: ring, pub: kp.Public}
}

// makeTar is the fixture's request: a Dockerfile, handler.go and the build
// config, then extra.
func makeTar(t *testing.T, extra ...testenv.TarEntry) []byte {
	t.Helper()
	return testenv.BuildTar(t, append([]testenv.TarEntry{
		testenv.Dir("context"),
		testenv.File("context/Dockerfile", "FROM scratch\nCOPY . /\n"),
		testenv.File("context/handler.go", "package function\n"),
		testenv.ConfigEntry(t, map[string]any{"image": testImage, "platforms": []string{"linux/amd64"}}),
	}, extra...)...)
}

// configTar is a valid build tar with the given build config.
func configTar(t *testing.T, cfg map[string]any) []byte {
	t.Helper()
	return testenv.BuildTar(t, testenv.Dir("context"), testenv.File("context/Dockerfile", "FROM scratch\nCOPY . /\n"), testenv.ConfigEntry(t, cfg))
}

func (f *fixture) sealedTar(values map[string][]byte) []byte {
	f.t.Helper()
	sealed, err := secrets.Seal(f.pub, values)
	if err != nil {
		f.t.Fatal(err)
	}
	return makeTar(f.t, testenv.File(secrets.FileName, string(sealed)))
}

func (f *fixture) request(ctx context.Context, method string, body []byte, accept string) *http.Request {
	f.t.Helper()
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+"/build", bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("X-Build-Signature", testenv.Sign([]byte(payloadText), body))
	req.Header.Set("Content-Type", "application/octet-stream")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	return req
}

func (f *fixture) do(req *http.Request) *http.Response {
	f.t.Helper()
	res, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { res.Body.Close() })
	return res
}

// read does req and returns the response, body fully read.
func (f *fixture) read(req *http.Request) (*http.Response, []byte) {
	f.t.Helper()
	res := f.do(req)
	data, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return res, data
}

// post sends a signed build and returns the response, body fully read.
func (f *fixture) post(body []byte, accept string) (*http.Response, []byte) {
	f.t.Helper()
	return f.read(f.request(nil, http.MethodPost, body, accept))
}

// ndjsonLines checks the NDJSON framing and decodes every line.
func ndjsonLines(t *testing.T, data []byte) []progress.Result {
	t.Helper()
	if len(data) == 0 || data[len(data)-1] != '\n' {
		t.Fatalf("stream does not end with a newline: %q", tail(data))
	}
	var out []progress.Result
	for i, line := range bytes.Split(data[:len(data)-1], []byte("\n")) {
		if len(line)+1 >= maxWireLine {
			t.Fatalf("line %d is %d bytes: go-sdk's scanner stops at 64 KiB", i, len(line)+1)
		}
		var r progress.Result
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("line %d is not one JSON result: %v: %q", i, err, tail(line))
		}
		out = append(out, r)
	}
	return out
}

func tail(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}

// checkFinal asserts the framing rules of a finished stream and returns its
// last line: only the last line may carry a final status.
func checkFinal(t *testing.T, results []progress.Result, wantStatus string) progress.Result {
	t.Helper()
	for i, r := range results[:len(results)-1] {
		if r.Status != progress.InProgress {
			t.Fatalf("line %d of %d has status %q before the end", i, len(results), r.Status)
		}
	}
	last := results[len(results)-1]
	if last.Status != wantStatus {
		t.Fatalf("final status %q (error %q), want %q", last.Status, last.Error, wantStatus)
	}
	if last.Image != testImage {
		t.Fatalf("final image %q, want %q", last.Image, testImage)
	}
	return last
}

func allLog(results []progress.Result) []string {
	var out []string
	for _, r := range results {
		out = append(out, r.Log...)
	}
	return out
}

func TestStreamSuccessArrivesLineByLine(t *testing.T) {
	release := make(chan struct{})
	f := newFixture(t, func(ctx context.Context, b buildkit.Build, logf func([]string)) error {
		if b.Image != testImage || len(b.Platforms) != 1 || !b.Push {
			return fmt.Errorf("unexpected build %+v", b)
		}
		df, err := b.Context.Open("Dockerfile")
		if err != nil {
			return err
		}
		df.Close()
		logf([]string{"v: step one"})
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		logf([]string{"v: step two"})
		return nil
	})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the server's cleanup

	// Headers and the first lines must be flushed while the build runs;
	// client.Do itself waits for them.
	resCh := make(chan *http.Response, 1)
	errCh := make(chan error, 1)
	go func() {
		res, err := f.srv.Client().Do(f.request(nil, http.MethodPost, makeTar(t), ndjson))
		if err != nil {
			errCh <- err
			return
		}
		resCh <- res
	}()
	var res *http.Response
	select {
	case res = <-resCh:
		t.Cleanup(func() { res.Body.Close() })
	case err := <-errCh:
		t.Fatal(err)
	case <-time.After(testenv.HangGuard):
		t.Fatal("hang guard: no response headers while the build was running: the stream is not flushed")
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != ndjson {
		t.Fatalf("Content-Type %q", ct)
	}
	if res.Header.Get("Content-Encoding") != "" {
		t.Fatal("NDJSON must not be compressed")
	}

	// The first build line must reach the client while the build still runs.
	r := bufio.NewReader(res.Body)
	got := make(chan error, 1)
	go func() {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				got <- err
				return
			}
			var res progress.Result
			if err := json.Unmarshal(line, &res); err != nil {
				got <- err
				return
			}
			if res.Status != progress.InProgress {
				got <- fmt.Errorf("status %q before the build ended", res.Status)
				return
			}
			if len(res.Log) > 0 && res.Log[0] == "v: step one" {
				got <- nil
				return
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testenv.HangGuard):
		t.Fatal("hang guard: no progress line arrived while the build was running: the stream is not flushed")
	}
	unblock()
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	results := ndjsonLines(t, rest)
	last := checkFinal(t, results, progress.Success)
	if last.Error != "" {
		t.Fatalf("error on success: %q", last.Error)
	}
	if log := allLog(results); len(log) != 1 || log[0] != "v: step two" {
		t.Fatalf("log after release: %q", log)
	}
	if f.runner.calls.Load() != 1 {
		t.Fatalf("runner called %d times", f.runner.calls.Load())
	}
}

func TestStreamFailure(t *testing.T) {
	f := newFixture(t, func(_ context.Context, _ buildkit.Build, logf func([]string)) error {
		logf([]string{"l: npm ERR! code E404"})
		return errors.New(failureError + "\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:12")
	})
	res, data := f.post(makeTar(t), ndjson)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: after the 200 a failure is only a final line", res.StatusCode)
	}
	results := ndjsonLines(t, data)
	last := checkFinal(t, results, progress.Failed)
	if last.Error != failureError {
		t.Fatalf("error %q, want the first line only", last.Error)
	}
	if !bytes.Contains(data, []byte(`"status":"failed"`)) || bytes.Contains(data, []byte("failure\"")) {
		t.Fatalf("status spelling on the wire: %s", data)
	}
	if log := allLog(results); len(log) != 1 || log[0] != "l: npm ERR! code E404" {
		t.Fatalf("log %q", log)
	}
}

func decodeOne(t *testing.T, data []byte) progress.Result {
	t.Helper()
	if bytes.Count(bytes.TrimSpace(data), []byte("\n")) != 0 {
		t.Fatalf("buffered reply is not one compact object: %q", tail(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var r progress.Result
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("reply is not JSON: %v: %q", err, tail(data))
	}
	if dec.More() {
		t.Fatalf("more than one JSON value in a buffered reply")
	}
	return r
}

func TestBufferedSuccess(t *testing.T) {
	lines := []string{"v: one", "l: two", "v: three"}
	f := newFixture(t, func(_ context.Context, _ buildkit.Build, logf func([]string)) error {
		logf(lines[:1])
		logf(lines[1:])
		return nil
	})
	res, data := f.post(makeTar(t), "")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := decodeOne(t, data)
	if r.Status != progress.Success || r.Image != testImage || r.Error != "" {
		t.Fatalf("reply %+v", r)
	}
	if strings.Join(r.Log, "|") != strings.Join(lines, "|") {
		t.Fatalf("log %q, want the whole log %q", r.Log, lines)
	}
	if r.Duration < 0 {
		t.Fatalf("duration %v", r.Duration)
	}
}

func TestBufferedFailure(t *testing.T) {
	f := newFixture(t, func(_ context.Context, _ buildkit.Build, logf func([]string)) error {
		logf([]string{"l: boom"})
		return errors.New(failureError + "\nmore detail")
	})
	res, data := f.post(makeTar(t), "")
	if res.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := decodeOne(t, data)
	if r.Status != "failed" || r.Error != failureError || r.Image != testImage {
		t.Fatalf("reply %+v", r)
	}
	if len(r.Log) != 1 || r.Log[0] != "l: boom" {
		t.Fatalf("log %q", r.Log)
	}
}

func TestSecretIsRedacted(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	f := newFixture(t, func(_ context.Context, b buildkit.Build, logf func([]string)) error {
		v := string(b.Secrets["npm_token"])
		mu.Lock()
		seen = append(seen, v)
		mu.Unlock()
		logf([]string{"l: token is " + v, "l: //registry.npmjs.org/:_authToken=" + v + " ok"})
		return errors.New("failed to solve: bad token " + v + "\nsecond line " + v)
	})
	body := f.sealedTar(map[string][]byte{"npm_token": []byte(secretValue)})

	for _, accept := range []string{ndjson, ""} {
		res, data := f.post(body, accept)
		if bytes.Contains(data, []byte(secretValue)) {
			t.Fatalf("Accept %q: secret in reply: %s", accept, data)
		}
		var log []string
		var last progress.Result
		if accept == ndjson {
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			results := ndjsonLines(t, data)
			last = checkFinal(t, results, progress.Failed)
			log = allLog(results)
		} else {
			if res.StatusCode != http.StatusInternalServerError {
				t.Fatalf("status %d", res.StatusCode)
			}
			last = decodeOne(t, data)
			log = last.Log
		}
		want := []string{"l: token is [redacted]", "l: //registry.npmjs.org/:_authToken=[redacted] ok"}
		if strings.Join(log, "|") != strings.Join(want, "|") {
			t.Fatalf("Accept %q: log %q, want %q", accept, log, want)
		}
		if last.Error != "failed to solve: bad token [redacted]" {
			t.Fatalf("Accept %q: error %q", accept, last.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != secretValue || seen[1] != secretValue {
		t.Fatalf("the runner did not get the unsealed secret: %q", seen)
	}
}

func TestLongLinesStayUnderScannerLimit(t *testing.T) {
	huge := strings.Repeat("x", 200<<10)
	f := newFixture(t, func(_ context.Context, _ buildkit.Build, logf func([]string)) error {
		logf([]string{"l: before", huge, "l: after"})
		// Lines that encoding/json escapes six-fold (<, >, &, ANSI).
		escaped := make([]string, 64)
		for i := range escaped {
			escaped[i] = strings.Repeat("<\x1b>", 4<<10/3)
		}
		logf(escaped)
		return nil
	})
	body := makeTar(t)

	res, data := f.post(body, ndjson)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	results := ndjsonLines(t, data) // fails on any line >= 64 KiB
	checkFinal(t, results, progress.Success)
	log := allLog(results)
	if len(log) != 3+64 || log[0] != "l: before" || log[2] != "l: after" {
		t.Fatalf("log has %d lines, starts %q", len(log), log[:3])
	}
	if !strings.HasSuffix(log[1], "[truncated]") || len(log[1]) > progress.MaxLineBytes {
		t.Fatalf("200 KiB line came out as %d bytes", len(log[1]))
	}

	// go-sdk v0.2.22's reader (the one faas-cli uses) sees the final line.
	tarPath := filepath.Join(t.TempDir(), "req.tar")
	if err := os.WriteFile(tarPath, body, 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(f.srv.URL)
	fb := builder.NewFunctionBuilder(u, f.srv.Client(), builder.WithHmacAuth(payloadText))
	stream, err := fb.BuildWithStream(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	sdkResults := testenv.Collect(t, stream)
	last := sdkResults[len(sdkResults)-1]
	if last.Status != builder.BuildSuccess || last.Image != testImage {
		t.Fatalf("go-sdk's last result %+v: the stream was cut", last)
	}
	n := 0
	for _, r := range sdkResults {
		n += len(r.Log)
	}
	if n != 3+64 {
		t.Fatalf("go-sdk saw %d log lines, want %d", n, 3+64)
	}
}

func TestAcceptSelectsMode(t *testing.T) {
	f := newFixture(t, nil)
	body := makeTar(t)
	for accept, stream := range map[string]bool{
		"*/*":                              false,
		"":                                 false,
		"application/json":                 false,
		"Application/X-NDJSON; q=1":        true,
		"text/plain, application/x-ndjson": true,
	} {
		res, data := f.post(body, accept)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("Accept %q: status %d", accept, res.StatusCode)
		}
		ct := res.Header.Get("Content-Type")
		if stream {
			if ct != ndjson {
				t.Errorf("Accept %q: Content-Type %q, want NDJSON", accept, ct)
			}
			results := ndjsonLines(t, data)
			if len(results) < 2 {
				t.Errorf("Accept %q: %d lines, want progress and a final line", accept, len(results))
			}
			checkFinal(t, results, progress.Success)
		} else {
			if ct != "application/json" {
				t.Errorf("Accept %q: Content-Type %q, want application/json", accept, ct)
			}
			if r := decodeOne(t, data); r.Status != progress.Success || len(r.Log) != 1 {
				t.Errorf("Accept %q: reply %+v", accept, r)
			}
		}
	}
}

type errorBody struct {
	Status string `json:"status"`
	Error  string `json:"error"`
}

// checkErrorReply checks a refusal: code and a JSON error body, or, to a
// client that streams, 200 with the same object as the stream's only line
// and the real code in X-Fnbuilder-Status.
func checkErrorReply(t *testing.T, res *http.Response, data []byte, code int) errorBody {
	t.Helper()
	streamed := res.Request != nil && strings.Contains(res.Request.Header.Get("Accept"), ndjson)
	got, wantType := res.StatusCode, "application/json"
	if streamed {
		if res.StatusCode != http.StatusOK {
			t.Fatalf("a streaming client's refusal has status %d, want 200: %s", res.StatusCode, data)
		}
		got, _ = strconv.Atoi(res.Header.Get(handlers.StatusHeader))
		wantType = ndjson
	}
	if got != code {
		t.Fatalf("status %d, want %d: %s", got, code, data)
	}
	if ct := res.Header.Get("Content-Type"); ct != wantType {
		t.Fatalf("Content-Type %q, want %s", ct, wantType)
	}
	var e errorBody
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, data)
	}
	if e.Status != "failed" || e.Error == "" {
		t.Fatalf("error body %+v", e)
	}
	return e
}

func TestMethodNotAllowed(t *testing.T) {
	f := newFixture(t, nil)
	res := f.do(f.request(nil, http.MethodGet, nil, ""))
	data, _ := io.ReadAll(res.Body)
	checkErrorReply(t, res, data, http.StatusMethodNotAllowed)
	if res.Header.Get("Allow") != "POST" {
		t.Fatalf("Allow %q", res.Header.Get("Allow"))
	}
	if f.runner.calls.Load() != 0 {
		t.Fatal("runner called")
	}
}

func (f *fixture) ready() int {
	f.t.Helper()
	res, err := f.srv.Client().Get(f.srv.URL + "/ready")
	if err != nil {
		f.t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func (f *fixture) waitReady(want int) {
	f.t.Helper()
	waitValue(f.t, "/ready's status", want, f.ready)
}

// blocking is a runner that reports its start and waits for release or
// for its context to end.
type blocking struct {
	started  chan struct{}
	release  chan struct{}
	ctxDone  chan error
	doneOnce sync.Once
}

func newBlocking() *blocking {
	return &blocking{started: make(chan struct{}, 10), release: make(chan struct{}), ctxDone: make(chan error, 10)}
}

func (b *blocking) run(ctx context.Context, _ buildkit.Build, logf func([]string)) error {
	logf([]string{"l: started"})
	b.started <- struct{}{}
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		b.ctxDone <- ctx.Err()
		return ctx.Err()
	}
}

func (b *blocking) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-b.started:
	case <-time.After(testenv.HangGuard):
		t.Fatal("hang guard: the build did not start")
	}
}

func TestSlotsFull(t *testing.T) {
	b := newBlocking()
	f := newFixture(t, b.run, func(o *handlers.BuildOptions) { o.Slots = schedule.New(1, 0) })
	if got := f.ready(); got != http.StatusOK {
		t.Fatalf("/ready %d before any build", got)
	}
	body := makeTar(t)
	first := f.do(f.request(nil, http.MethodPost, body, ndjson))
	b.waitStarted(t)

	res, data := f.post(body, ndjson)
	e := checkErrorReply(t, res, data, http.StatusTooManyRequests)
	if res.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	if !strings.Contains(e.Error, "1") {
		t.Fatalf("429 error does not state the limit: %q", e.Error)
	}
	if got := f.ready(); got != http.StatusServiceUnavailable {
		t.Fatalf("/ready %d while full, want 503", got)
	}
	if n := f.runner.calls.Load(); n != 1 {
		t.Fatalf("runner called %d times", n)
	}

	close(b.release)
	rest, err := io.ReadAll(first.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkFinal(t, ndjsonLines(t, rest), progress.Success)
	f.waitReady(http.StatusOK)
	if res, data := f.post(body, ""); res.StatusCode != http.StatusOK {
		t.Fatalf("after release: status %d: %s", res.StatusCode, data)
	}
}

func TestClientDisconnectCancelsBuild(t *testing.T) {
	b := newBlocking()
	f := newFixture(t, b.run, func(o *handlers.BuildOptions) { o.Slots = schedule.New(1, 0) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := f.do(f.request(ctx, http.MethodPost, makeTar(t), ndjson))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	b.waitStarted(t)
	if _, err := bufio.NewReader(res.Body).ReadBytes('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-b.ctxDone:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("build context ended with %v, want canceled", err)
		}
	case <-time.After(testenv.HangGuard):
		// A hang guard, not a speed claim: the claim is that leaving
		// cancels the build at all.
		t.Fatalf("hang guard: the build's context was still not cancelled %s after the client left", testenv.HangGuard)
	}
	f.waitReady(http.StatusOK)
	close(b.release)
	if res, data := f.post(makeTar(t), ""); res.StatusCode != http.StatusOK {
		t.Fatalf("slot not freed: status %d: %s", res.StatusCode, data)
	}
}

func TestBuildTimeout(t *testing.T) {
	b := newBlocking()
	f := newFixture(t, b.run, func(o *handlers.BuildOptions) { o.Timeout = 200 * time.Millisecond })
	res, data := f.post(makeTar(t), ndjson)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	last := checkFinal(t, ndjsonLines(t, data), progress.Failed)
	if !strings.Contains(last.Error, "deadline") {
		t.Fatalf("error %q does not mention the deadline", last.Error)
	}
	select {
	case err := <-b.ctxDone:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ctx error %v", err)
		}
	default:
		t.Fatal("runner's context did not end")
	}
}

func TestPayloadSecretUnusable(t *testing.T) {
	for name, read := range map[string]func() ([]byte, error){
		"missing": func() ([]byte, error) { return os.ReadFile(filepath.Join(t.TempDir(), "nope")) },
		"empty":   func() ([]byte, error) { return []byte(" \n\t"), nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil, func(o *handlers.BuildOptions) { o.Tenants = oneTenant(read) })
			body := makeTar(t)
			for _, key := range []string{payloadText, ""} {
				req := f.request(nil, http.MethodPost, body, "")
				req.Header.Set("X-Build-Signature", testenv.Sign([]byte(key), body))
				res := f.do(req)
				data, _ := io.ReadAll(res.Body)
				checkErrorReply(t, res, data, http.StatusInternalServerError)
			}
			if f.runner.calls.Load() != 0 {
				t.Fatal("runner called without a usable payload secret")
			}
		})
	}
}

// postSigned posts body with header as its X-Build-Signature (none when
// it is ""), and reads the reply.
func (f *fixture) postSigned(body []byte, header string) (*http.Response, []byte) {
	f.t.Helper()
	req := f.request(nil, http.MethodPost, body, "")
	req.Header.Del("X-Build-Signature")
	if header != "" {
		req.Header.Set("X-Build-Signature", header)
	}
	return f.read(req)
}

func TestSignatureRequired(t *testing.T) {
	f := newFixture(t, nil)
	body := makeTar(t)
	for name, header := range map[string]string{
		"missing":   "",
		"wrong key": testenv.Sign([]byte("other"), body),
		"malformed": "sha1=abc",
		"untrimmed": testenv.Sign([]byte("  "+payloadText+"\n"), body),
	} {
		res, data := f.postSigned(body, header)
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, res.StatusCode)
			continue
		}
		checkErrorReply(t, res, data, http.StatusUnauthorized)
	}
	if f.runner.calls.Load() != 0 {
		t.Fatal("runner called for an unauthenticated request")
	}
}

func TestDisableHMAC(t *testing.T) {
	f := newFixture(t, nil, func(o *handlers.BuildOptions) {
		o.DisableHMAC = true
		o.Tenants = oneTenant(func() ([]byte, error) { return nil, errors.New("not mounted") })
	})
	body := makeTar(t)
	for name, header := range map[string]string{
		"unsigned":       "",
		"signed anyway":  testenv.Sign([]byte("whatever the client has"), body),
		"garbage header": "nonsense",
	} {
		res, data := f.postSigned(body, header)
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d with HMAC disabled: %s", name, res.StatusCode, data)
			continue
		}
		if r := decodeOne(t, data); r.Status != progress.Success {
			t.Errorf("%s: reply %+v", name, r)
		}
	}
	if n := f.runner.calls.Load(); n != 3 {
		t.Fatalf("runner called %d times, want 3", n)
	}
}

func TestBodyTooLarge(t *testing.T) {
	f := newFixture(t, nil, func(o *handlers.BuildOptions) { o.MaxBodyBytes = 2048 })
	body := makeTar(t, testenv.File("context/big.bin", strings.Repeat("\x01", 8<<10)))
	res, data := f.post(body, ndjson)
	checkErrorReply(t, res, data, http.StatusRequestEntityTooLarge)
	if f.runner.calls.Load() != 0 {
		t.Fatal("runner called for an oversized body")
	}
	left, _ := os.ReadDir(f.opts.SpoolDir)
	if len(left) != 0 {
		t.Fatalf("spool dir not empty: %v", left)
	}
}

func TestBadTarIs400(t *testing.T) {
	f := newFixture(t, nil)
	body := []byte("this is not a tar archive, just text that is long enough.......")
	body = append(body, make([]byte, 1024)...)
	for i := range body[:512] {
		if body[i] == 0 {
			body[i] = 'x'
		}
	}
	res, data := f.post(body, ndjson)
	checkErrorReply(t, res, data, http.StatusBadRequest)
	if f.runner.calls.Load() != 0 {
		t.Fatal("runner called for a bad tar")
	}
}

// The tar is indexed while the body arrives, but a body whose signature
// fails is refused for its signature alone, whatever its tar holds; the
// same tar signed is refused for what it holds.
func TestBadTarUnsignedIs401(t *testing.T) {
	f := newFixture(t, nil)
	body := makeTar(t, testenv.File("../escape", "x"))
	req := f.request(nil, http.MethodPost, body, ndjson)
	req.Header.Set("X-Build-Signature", testenv.Sign([]byte("other"), body))
	res := f.do(req)
	data, _ := io.ReadAll(res.Body)
	checkErrorReply(t, res, data, http.StatusUnauthorized)
	if bytes.Contains(data, []byte("escape")) {
		t.Fatalf("an unsigned request learnt how its tar was judged: %s", data)
	}
	res, data = f.post(body, ndjson)
	checkErrorReply(t, res, data, http.StatusBadRequest)
	if !bytes.Contains(data, []byte("../escape")) {
		t.Fatalf("the signed refusal does not name the entry: %s", data)
	}
	if f.runner.calls.Load() != 0 {
		t.Fatal("runner called for a bad tar")
	}
}

// A small request is built from memory: nothing reaches the spool
// directory; a larger one is spooled there while it builds, and removed.
func TestSmallBodiesStayOffDisk(t *testing.T) {
	var spoolDir string
	var during []os.DirEntry
	var served []byte
	f := newFixture(t, func(_ context.Context, b buildkit.Build, _ func([]string)) error {
		during, _ = os.ReadDir(spoolDir)
		var err error
		served, err = buildkit.ReadFile(b.Context, "data.bin", 4<<20)
		return err
	}, func(o *handlers.BuildOptions) { o.SpoolMemory = signature.NewMemory(1<<20, 4<<20) })
	spoolDir = f.opts.SpoolDir
	for _, size := range []int{100 << 10, 2 << 20} {
		data := bytes.Repeat([]byte{byte(size)}, size)
		res, reply := f.post(makeTar(t, testenv.File("context/data.bin", string(data))), ndjson)
		if res.StatusCode != http.StatusOK || !bytes.Contains(reply, []byte(`"success"`)) {
			t.Fatalf("%d bytes: %d %s", size, res.StatusCode, reply)
		}
		if !bytes.Equal(served, data) {
			t.Fatalf("%d bytes: BuildKit was served %d other bytes", size, len(served))
		}
		if onDisk := len(during) > 0; onDisk != (size > 1<<20) {
			t.Fatalf("%d bytes: spool dir during the build: %v", size, during)
		}
		if left, _ := os.ReadDir(spoolDir); len(left) != 0 {
			t.Fatalf("%d bytes: left in the spool dir: %v", size, left)
		}
	}
}

func TestMetrics(t *testing.T) {
	fail := atomic.Bool{}
	f := newFixture(t, func(_ context.Context, _ buildkit.Build, logf func([]string)) error {
		if fail.Load() {
			return errors.New("boom")
		}
		return nil
	})
	body := makeTar(t)
	// 401
	req := f.request(nil, http.MethodPost, body, "")
	req.Header.Set("X-Build-Signature", testenv.Sign([]byte("wrong"), body))
	res := f.do(req)
	io.Copy(io.Discard, res.Body)
	// 200 success, twice (buffered and streamed)
	f.post(body, "")
	f.post(body, ndjson)
	// 500 buffered failure, 200 streamed failure
	fail.Store(true)
	f.post(body, "")
	f.post(body, ndjson)
	// 405
	res = f.do(f.request(nil, http.MethodGet, nil, ""))
	io.Copy(io.Discard, res.Body)

	mres, err := f.srv.Client().Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer mres.Body.Close()
	text, _ := io.ReadAll(mres.Body)
	if mres.StatusCode != http.StatusOK {
		t.Fatalf("metrics status %d", mres.StatusCode)
	}
	for _, want := range []string{
		`fnbuilder_http_requests_total{code="401"} 1`,
		`fnbuilder_http_requests_total{code="200"} 3`,
		`fnbuilder_http_requests_total{code="500"} 1`,
		`fnbuilder_http_requests_total{code="405"} 1`,
		`fnbuilder_build_duration_seconds_count{status="success"} 2`,
		`fnbuilder_build_duration_seconds_count{status="failed"} 2`,
		`fnbuilder_builds_inflight 0`,
		`fnbuilder_request_receive_seconds_count 4`, // the signed bodies
	} {
		if !bytes.Contains(text, []byte(want+"\n")) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if bytes.Contains(text, []byte(`status="failure"`)) {
		t.Error(`"failure" label`)
	}
	if !bytes.Contains(text, []byte("fnbuilder_request_bytes_total ")) {
		t.Error("no bytes counter")
	}
}

func TestStreamOutlivesServerWriteTimeout(t *testing.T) {
	f := startFixture(t, func(ctx context.Context, _ buildkit.Build, logf func([]string)) error {
		for i := 1; i <= 6; i++ {
			select {
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			logf([]string{fmt.Sprintf("l: tick %d", i)})
		}
		return nil
	}, func(s *http.Server) { s.WriteTimeout = time.Second })

	start := time.Now()
	res, data := f.post(makeTar(t), ndjson)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if time.Since(start) < 3*time.Second {
		t.Fatalf("build ended early")
	}
	results := ndjsonLines(t, data)
	checkFinal(t, results, progress.Success)
	if log := allLog(results); len(log) != 6 || log[5] != "l: tick 6" {
		t.Fatalf("log %q: the stream was cut by the write timeout", log)
	}
}

func TestNothingAfterFinalLine(t *testing.T) {
	// Keep-alives come from another goroutine; none may follow the final
	// line (faas-cli reads a success stream until it closes).
	f := newFixture(t, func(_ context.Context, _ buildkit.Build, logf func([]string)) error {
		for i := 0; i < 20; i++ {
			logf([]string{"l: x"})
			time.Sleep(100 * time.Microsecond)
		}
		return nil
	}, func(o *handlers.BuildOptions) { o.KeepAlive = 50 * time.Microsecond })
	body := makeTar(t)
	for i := 0; i < 30; i++ {
		_, data := f.post(body, ndjson)
		results := ndjsonLines(t, data)
		checkFinal(t, results, progress.Success)
	}
}

// oneTenant is a builder without a tenants file: the implicit tenant,
// whose key read returns.
func oneTenant(read func() ([]byte, error)) *tenant.Directory {
	return tenant.NewDirectory([]tenant.Tenant{tenant.Implicit("payload-secret")}, func(string) ([]byte, error) { return read() })
}
