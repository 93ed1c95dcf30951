package stack

// TestAsyncStack is issue 5's "Must show", for real, on one local stack
// (cmd/fnb-stack) brought up for it in a fresh directory:
//
//   - build and deploy in one async request, with a sealed build secret and
//     a callback: exactly one callback, then the function answers;
//   - the callback receiver down: the result is fetched by X-Call-Id;
//   - a 5 MB context through the async path, by signed reference (and a
//     wrong digest refused, nothing pushed);
//   - buildkitd killed during a build and brought back: the build is
//     retried and succeeds;
//   - the queue-workers at a short ack_wait: the message is delivered more
//     than once, BuildKit runs one build, every callback carries the same
//     result and all but one are marked replayed.
//
// Like TestLocalStack it needs root and hack/install.sh's tools, fails
// (never skips) without them, and stops a stack that is up for the test
// and brings it back afterwards.

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/internal/callback"
	"github.com/fnbuilder/fnbuilder/internal/contextref"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const (
	gatewayURL = "http://127.0.0.1:8080"
	stackReg   = "127.0.0.1:5001"
	baseImage  = stackReg + "/busybox:latest"
	// hostOnBridge is the host as functions see it (the fnb0 bridge).
	hostOnBridge = "10.62.0.1"
)

func TestAsyncStack(t *testing.T) {
	bin, repo, dir := prepareStack(t)
	t0 := time.Now()
	run(t, bin, repo, 20*time.Minute, "up", "--dir", dir)
	t.Logf("up: %s", time.Since(t0).Round(100*time.Millisecond))
	e := newAsyncEnv(t, bin, repo, dir)

	step := func(name string, f func(t *testing.T, e *asyncEnv)) {
		t1 := time.Now()
		t.Run(name, func(t *testing.T) { f(t, e) })
		t.Logf("%s: %s", name, time.Since(t1).Round(100*time.Millisecond))
	}
	step("build and deploy with callback", testAsyncBuildAndDeploy)
	step("callback receiver down", testLostCallback)
	step("5 MB context by reference", testContextReference)
	step("buildkitd restarted mid-build", testBuildkitdRestart)
	step("redelivery after ack_wait", testRedelivery)

	pids := pidRecords(t, dir)
	t2 := time.Now()
	out := run(t, bin, repo, 5*time.Minute, "down", "--dir", dir)
	if strings.Contains(out, "had to clean up") {
		t.Errorf("down had to clean up after a component:\n%s", out)
	}
	t.Logf("down: %s", time.Since(t2).Round(100*time.Millisecond))
	assertClean(t, dir, pids)
}

// asyncEnv is what every subtest uses: the stack's credentials, the
// builder's public key and a callback receiver on loopback (the
// queue-workers run on the host).
type asyncEnv struct {
	bin, repo, dir string
	key            []byte // HMAC key of X-Build-Signature
	user, pass     string // gateway admin
	pub            []byte // builder's public key, from publickey-fn
	cb             receiver
}

func newAsyncEnv(t *testing.T, bin, repo, dir string) *asyncEnv {
	e := &asyncEnv{bin: bin, repo: repo, dir: dir}
	e.key = signature.Key(readStackSecret(t, dir, "payload-secret"))
	e.user = strings.TrimSpace(string(readStackSecret(t, dir, "basic-auth-user")))
	e.pass = strings.TrimSpace(string(readStackSecret(t, dir, "basic-auth-password")))
	code, body, _ := e.gw(t, http.MethodGet, "/function/publickey-fn", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /function/publickey-fn: %d %s", code, body)
	}
	pub, err := secrets.DecodePublicKey(body)
	if err != nil {
		t.Fatalf("publickey-fn answered %q: %v", body, err)
	}
	e.pub = pub
	e.cb = startReceiver(t)
	return e
}

func readStackSecret(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "secrets", name))
	if err != nil {
		t.Fatalf("stack secret: %v", err)
	}
	return b
}

var stackHTTP = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// gw calls the gateway (basic auth on /system/).
func (e *asyncEnv) gw(t *testing.T, method, path string, body []byte, hdr http.Header) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, gatewayURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if strings.HasPrefix(path, "/system/") {
		req.SetBasicAuth(e.user, e.pass)
	}
	resp, err := stackHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, b, resp.Header
}

// submit POSTs a signed body to /async-function/build-fn and returns the
// gateway's X-Call-Id.
func (e *asyncEnv) submit(t *testing.T, body []byte, contentType, callbackURL string) string {
	t.Helper()
	hdr := http.Header{}
	hdr.Set("Content-Type", contentType)
	hdr.Set("X-Build-Signature", testenv.Sign(e.key, body))
	hdr.Set("X-Callback-Url", callbackURL)
	code, b, rh := e.gw(t, http.MethodPost, "/async-function/build-fn", body, hdr)
	if code != http.StatusAccepted {
		t.Fatalf("POST /async-function/build-fn: %d %s, want 202", code, b)
	}
	id := rh.Get("X-Call-Id")
	if id == "" {
		t.Fatalf("POST /async-function/build-fn: 202 without X-Call-Id")
	}
	return id
}

// buildMetrics reads build-fn's /metrics through the gateway and sums the
// samples of each metric over its labels.
func (e *asyncEnv) buildMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	code, body, _ := e.gw(t, http.MethodGet, "/function/build-fn/metrics", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /function/build-fn/metrics: %d %s", code, body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			rest = line[i+1:]
		}
		v, err := strconv.ParseFloat(rest, 64)
		if err == nil {
			out[name] += v
		}
	}
	if _, ok := out["fnbuilder_builds_inflight"]; !ok {
		t.Fatalf("build-fn's /metrics lacks fnbuilder_builds_inflight:\n%s", body)
	}
	return out
}

// buildResult is build-fn's JSON answer, with the deploy fnbuilder adds.
type buildResult struct {
	Log    []string `json:"log"`
	Image  string   `json:"image"`
	Digest string   `json:"digest"`
	Status string   `json:"status"`
	Error  string   `json:"error"`
	Deploy *struct {
		Name, Namespace, Image, Action string
	} `json:"deploy"`
}

func parseResult(t *testing.T, body []byte) buildResult {
	t.Helper()
	var r buildResult
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("not a build result: %v\n%s", err, body)
	}
	return r
}

// receiver takes the queue-workers' callbacks.
type receiver struct{ *callback.Receiver }

func startReceiver(t *testing.T) receiver {
	r, err := callback.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return receiver{r}
}

// next waits for the next callback of callID; others are reported and
// dropped (every subtest waits for its own before the next starts).
func (r receiver) next(t *testing.T, callID string, timeout time.Duration) (callback.Callback, bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case c := <-r.C:
			if c.CallID() != callID {
				t.Errorf("a callback for another call %q arrived (status %s): %.300s", c.CallID(), c.Status(), c.Body)
				continue
			}
			return c, true
		case <-deadline.C:
			return callback.Callback{}, false
		}
	}
}

// buildTar makes a build tar with go-sdk's builder.MakeTar from files,
// adds extra keys to com.openfaas.docker.config (fnbuilder's deploy) and,
// when sealed is set, the com.openfaas.secrets envelope.
func buildTar(t *testing.T, files map[string][]byte, cfg builder.BuildConfig, extra map[string]any, sealed []byte) []byte {
	t.Helper()
	src := t.TempDir()
	for name, b := range files {
		testenv.WriteFiles(t, src, map[string]string{name: string(b)})
	}
	tarPath := filepath.Join(t.TempDir(), "req.tar")
	if err := builder.MakeTar(tarPath, src, &cfg); err != nil {
		t.Fatalf("builder.MakeTar: %v", err)
	}
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entries []testenv.TarEntry
	sawConfig := false
	testenv.EachEntry(t, tarPath, f, func(h *tar.Header, data []byte) {
		if h.Name == builder.BuilderConfigFileName {
			sawConfig = true
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatalf("%s: %v", h.Name, err)
			}
			maps.Copy(m, extra)
			if data, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
			h.Size = int64(len(data))
		}
		entries = append(entries, testenv.TarEntry{Header: *h, Body: string(data)})
	})
	if !sawConfig {
		t.Fatalf("builder.MakeTar wrote no %s", builder.BuilderConfigFileName)
	}
	if sealed != nil {
		entries = append(entries, testenv.TarEntry{Header: tar.Header{Name: builder.BuildSecretsFileName, Mode: 0o600, Size: int64(len(sealed))}, Body: string(sealed)})
	}
	return testenv.BuildTar(t, entries...)
}

func hasLine(log []string, substr string) bool {
	for _, l := range log {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

// maxAsyncBody is the practical cap of an async body: NATS Streaming's
// 1 MB message limit, and the gateway base64-encodes the body.
const maxAsyncBody = 700 << 10

// 1. A build with a sealed secret and a deploy spec, through
// /async-function/build-fn: one callback with the combined result, then
// the function answers through the gateway.
func testAsyncBuildAndDeploy(t *testing.T, e *asyncEnv) {
	id := testenv.RandomHex(t, 5)
	secret := []byte("async-secret-" + id)
	sum := sha256.Sum256(secret)
	fingerprint := hex.EncodeToString(sum[:])[:16]
	greeting := "hello from the deploy spec " + id
	image := stackReg + "/e2e/async-hello:" + id
	dockerfile := `FROM ` + baseImage + `
ARG BUILD_ID
RUN --mount=type=secret,id=token,required=true mkdir -p /www && \
    echo "async-hello build $BUILD_ID token $(sha256sum /run/secrets/token | cut -c1-16)" > /www/index.html
EXPOSE 8080
CMD ["sh", "-c", "echo \"GREETING=$GREETING\" > /www/env.txt && exec httpd -f -p 8080 -h /www"]
`
	sealed, err := secrets.Seal(e.pub, map[string][]byte{"token": secret})
	if err != nil {
		t.Fatal(err)
	}
	body := buildTar(t, map[string][]byte{"Dockerfile": []byte(dockerfile)},
		builder.BuildConfig{Image: image, BuildArgs: map[string]string{"BUILD_ID": id}},
		map[string]any{"deploy": map[string]any{
			"name":   "async-hello",
			"env":    map[string]string{"GREETING": greeting},
			"labels": map[string]string{"fnbuilder.dev/e2e": "async-" + id},
		}}, sealed)
	if len(body) > maxAsyncBody {
		t.Fatalf("the build tar is %d bytes, over the async limit", len(body))
	}

	t0 := time.Now()
	callID := e.submit(t, body, "application/octet-stream", e.cb.URL)
	c, ok := e.cb.next(t, callID, 5*time.Minute)
	if !ok {
		t.Fatalf("no callback for %s within 5m", callID)
	}
	t.Logf("callback for %s after %s: X-Function-Status %s", callID, time.Since(t0).Round(100*time.Millisecond), c.Status())
	res := parseResult(t, c.Body)
	if c.Status() != "200" || res.Status != "success" {
		t.Fatalf("callback: X-Function-Status %s, status %q, error %q\n%s", c.Status(), res.Status, res.Error, strings.Join(res.Log, "\n"))
	}
	if res.Image != image {
		t.Errorf("callback image %q, want %q", res.Image, image)
	}
	// The deploy pins the pushed manifest: image@digest.
	pinned := image + "@" + res.Digest
	if res.Deploy == nil || res.Deploy.Name != "async-hello" || res.Deploy.Image != pinned || !strings.HasPrefix(res.Digest, "sha256:") ||
		(res.Deploy.Action != "created" && res.Deploy.Action != "updated") {
		t.Errorf("callback deploy = %+v, want async-hello, %s, created/updated", res.Deploy, pinned)
	}
	if c.Header.Get("X-Function-Name") != "build-fn" {
		t.Errorf("callback X-Function-Name = %q", c.Header.Get("X-Function-Name"))
	}
	if c.Header.Get("X-Fnbuilder-Replayed") != "" {
		t.Errorf("the only delivery's callback is marked replayed")
	}
	if bytes.Contains(c.Body, secret) {
		t.Errorf("the callback carries the build secret's value")
	}
	// build-fn kept exactly what it answered, for a lost callback.
	signed := http.Header{"X-Build-Signature": {testenv.Sign(e.key, []byte(callID))}}
	if code, kept, h := e.gw(t, http.MethodGet, "/function/build-fn/results/"+callID, nil, signed); code != http.StatusOK ||
		h.Get("X-Build-Code") != "200" || !bytes.Equal(bytes.TrimSpace(kept), bytes.TrimSpace(c.Body)) {
		t.Errorf("GET /function/build-fn/results/%s: %d, X-Build-Code %q; body differs from the callback's:\n%s\n---\n%s", callID, code, h.Get("X-Build-Code"), kept, c.Body)
	}
	// Exactly one: no second delivery, no second callback.
	if extra, ok := e.cb.next(t, callID, 5*time.Second); ok {
		t.Errorf("a second callback for %s arrived (X-Function-Status %s, replayed %q)", callID, extra.Status(), extra.Header.Get("X-Fnbuilder-Replayed"))
	}

	// The deployed function answers through the gateway, built with the
	// sealed secret and run with the deploy spec's env.
	page := waitFunction(t, e, "/function/async-hello", "build "+id, 2*time.Minute)
	if !strings.Contains(page, "token "+fingerprint) {
		t.Errorf("GET /function/async-hello = %q, want the secret's fingerprint %s", page, fingerprint)
	}
	if env := waitFunction(t, e, "/function/async-hello/env.txt", "GREETING=", 30*time.Second); strings.TrimSpace(env) != "GREETING="+greeting {
		t.Errorf("GET /function/async-hello/env.txt = %q, want GREETING=%s", env, greeting)
	}
	code, st, _ := e.gw(t, http.MethodGet, "/system/function/async-hello", nil, nil)
	var fs struct {
		Image  string            `json:"image"`
		Labels map[string]string `json:"labels"`
	}
	if code != http.StatusOK || json.Unmarshal(st, &fs) != nil {
		t.Fatalf("GET /system/function/async-hello: %d %s", code, st)
	}
	if fs.Image != pinned || fs.Labels["fnbuilder.dev/e2e"] != "async-"+id {
		t.Errorf("deployed function = image %q labels %v, want %s and fnbuilder.dev/e2e=async-%s", fs.Image, fs.Labels, pinned, id)
	}
}

// waitFunction GETs path through the gateway until it answers 200 with
// want in its body.
func waitFunction(t *testing.T, e *asyncEnv, path, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body, _ := e.gw(t, http.MethodGet, path, nil, nil)
		if code == http.StatusOK && strings.Contains(string(body), want) {
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q after %s, want 200 with %q", path, code, body, timeout, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// 4. The callback receiver is down: the queue-worker's POST fails and the
// result is lost to it, but build-fn keeps it by X-Call-Id.
func testLostCallback(t *testing.T, e *asyncEnv) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + l.Addr().String() + "/callback"
	l.Close()

	id := testenv.RandomHex(t, 5)
	image := stackReg + "/e2e/lost-callback:" + id
	body := buildTar(t, map[string][]byte{"Dockerfile": []byte("FROM " + baseImage + "\nARG BUILD_ID\nRUN echo lost-callback $BUILD_ID > /id\n")},
		builder.BuildConfig{Image: image, BuildArgs: map[string]string{"BUILD_ID": id}}, nil, nil)
	qw := logOffsets(e.dir, "queue-worker-1", "queue-worker-2")
	callID := e.submit(t, body, "application/octet-stream", deadURL)

	path := "/function/build-fn/results/" + callID
	signed := http.Header{}
	signed.Set("X-Build-Signature", testenv.Sign(e.key, []byte(callID)))
	deadline := time.Now().Add(5 * time.Minute)
	var res []byte
	var rh http.Header
	seen := map[int]bool{}
	for {
		code, b, h := e.gw(t, http.MethodGet, path, nil, signed)
		seen[code] = true
		if code == http.StatusOK {
			res, rh = b, h
			break
		}
		if code != http.StatusAccepted && code != http.StatusNotFound {
			t.Fatalf("GET %s: %d %s", path, code, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: still %d %s after 5m", path, code, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
	r := parseResult(t, res)
	if r.Status != "success" || r.Image != image {
		t.Fatalf("fetched result: status %q image %q error %q, want success and %s", r.Status, r.Image, r.Error, image)
	}
	if rh.Get("X-Build-Code") != "200" {
		t.Errorf("fetched result's X-Build-Code = %q, want 200", rh.Get("X-Build-Code"))
	}
	t.Logf("result of %s fetched by id (answers seen while polling: %v)", callID, seen)

	// The queue-worker did try the dead receiver.
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(logsSince(e.dir, qw), "Error posting to callback-url: error posting result to URL "+deadURL) {
		if time.Now().After(deadline) {
			t.Fatalf("no queue-worker log says its callback to %s failed:\n%s", deadURL, logsSince(e.dir, qw))
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Only a signature over the id opens it.
	for name, hdr := range map[string]http.Header{
		"unsigned":                    {},
		"signed with a different key": {"X-Build-Signature": {testenv.Sign([]byte("not the payload secret"), []byte(callID))}},
		"signed over another id":      {"X-Build-Signature": {testenv.Sign(e.key, []byte(callID+"x"))}},
	} {
		code, b, _ := e.gw(t, http.MethodGet, path, nil, hdr)
		if code != http.StatusUnauthorized || bytes.Contains(b, []byte(image)) {
			t.Errorf("%s GET %s: %d %s, want 401 without the result", name, path, code, b)
		}
	}
}

func logOffsets(dir string, names ...string) map[string]int64 {
	out := map[string]int64{}
	for _, n := range names {
		if fi, err := os.Stat(filepath.Join(dir, "logs", n+".log")); err == nil {
			out[n] = fi.Size()
		} else {
			out[n] = 0
		}
	}
	return out
}

// logsSince is what the named daemon logs gained since their offsets.
func logsSince(dir string, from map[string]int64) string {
	var b strings.Builder
	for n, off := range from {
		f, err := os.Open(filepath.Join(dir, "logs", n+".log"))
		if err != nil {
			continue
		}
		// A restarted daemon appends to its log; offsets stay valid.
		f.Seek(off, io.SeekStart)
		data, _ := io.ReadAll(io.LimitReader(f, 16<<20))
		f.Close()
		fmt.Fprintf(&b, "--- %s ---\n%s", n, data)
	}
	return b.String()
}

// 5. A context far over the queue's limit travels as a signed reference to
// a tar served on the host's bridge address; a wrong digest is refused.
func testContextReference(t *testing.T, e *asyncEnv) {
	blob := make([]byte, 5<<20)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	blobSum := sha256.Sum256(blob)
	id := testenv.RandomHex(t, 5)
	image := stackReg + "/e2e/big-context:" + id
	tarBytes := buildTar(t, map[string][]byte{
		"Dockerfile": []byte("FROM " + baseImage + "\nCOPY blob.bin /data/blob.bin\n"),
		"blob.bin":   blob,
	}, builder.BuildConfig{Image: image}, nil, nil)
	if len(tarBytes) < 5<<20 || len(tarBytes) <= maxAsyncBody {
		t.Fatalf("the tar is %d bytes; the test needs it over 5 MB", len(tarBytes))
	}
	tarSum := sha256.Sum256(tarBytes)

	// The same context under another tag, referenced with a wrong digest.
	wrongImage := image + "-wrong"
	wrongTar := buildTar(t, map[string][]byte{
		"Dockerfile": []byte("FROM " + baseImage + "\nCOPY blob.bin /data/blob.bin\n"),
		"blob.bin":   blob,
	}, builder.BuildConfig{Image: wrongImage}, nil, nil)

	// Served where build-fn's container reaches the host: the bridge address.
	l, err := net.Listen("tcp", hostOnBridge+":0")
	if err != nil {
		t.Fatalf("listen on the bridge address %s (is fnb0 up?): %v", hostOnBridge, err)
	}
	served := map[string][]byte{"/ctx.tar": tarBytes, "/wrong.tar": wrongTar}
	var mu sync.Mutex
	fetches := map[string][]string{} // path → remote addresses
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := served[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		fetches[r.URL.Path] = append(fetches[r.URL.Path], r.RemoteAddr)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-tar")
		http.ServeContent(w, r, "ctx.tar", time.Time{}, bytes.NewReader(b))
	})}
	go srv.Serve(l)
	defer srv.Close()
	fetched := func(path string) []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), fetches[path]...)
	}
	ref := func(path string, digest []byte) []byte {
		b, _ := json.Marshal(contextref.Ref{URL: "http://" + l.Addr().String() + path, Digest: "sha256:" + hex.EncodeToString(digest)})
		return b
	}

	t0 := time.Now()
	callID := e.submit(t, ref("/ctx.tar", tarSum[:]), contextref.MediaType, e.cb.URL)
	c, ok := e.cb.next(t, callID, 5*time.Minute)
	if !ok {
		t.Fatalf("no callback for %s within 5m", callID)
	}
	res := parseResult(t, c.Body)
	if c.Status() != "200" || res.Status != "success" || res.Image != image {
		t.Fatalf("callback: X-Function-Status %s, status %q, image %q, error %q", c.Status(), res.Status, res.Image, res.Error)
	}
	from := fetched("/ctx.tar")
	if len(from) == 0 {
		t.Fatalf("the build succeeded but nobody fetched the referenced tar")
	}
	t.Logf("%d-byte context by reference: callback after %s, fetched by %v", len(tarBytes), time.Since(t0).Round(100*time.Millisecond), from)

	got := testenv.ImageFile(t, stackRegistry(t, e.dir), "e2e/big-context", id, "/data/blob.bin")
	if gotSum := sha256.Sum256(got); len(got) != len(blob) || gotSum != blobSum {
		t.Errorf("/data/blob.bin in %s: %d bytes, sha256 %x; want %d bytes, sha256 %x", image, len(got), gotSum, len(blob), blobSum)
	}

	// A wrong digest: fetched, refused for its bytes, nothing built or pushed.
	wrong := sha256.Sum256([]byte("not the context"))
	callID = e.submit(t, ref("/wrong.tar", wrong[:]), contextref.MediaType, e.cb.URL)
	c, ok = e.cb.next(t, callID, 2*time.Minute)
	if !ok {
		t.Fatalf("no callback for the wrong digest (%s) within 2m", callID)
	}
	res = parseResult(t, c.Body)
	if c.Status() != "400" || res.Status != "failed" || !strings.Contains(res.Error, "digest") {
		t.Errorf("wrong digest: X-Function-Status %s, status %q, error %q; want 400, failed, a digest error", c.Status(), res.Status, res.Error)
	}
	if len(fetched("/wrong.tar")) == 0 {
		t.Errorf("wrong digest: refused without being fetched (the refusal must come from the bytes)")
	}
	reg := stackRegistry(t, e.dir)
	if testenv.TagExists(t, reg, "e2e/big-context", id+"-wrong") {
		t.Errorf("wrong digest: %s was pushed", wrongImage)
	}
	if !testenv.TagExists(t, reg, "e2e/big-context", id) {
		t.Errorf("%s is not in the registry (the check above can see a pushed image)", image)
	}
}

// 3. buildkitd dies during a build and comes back: build-fn retries the
// transient fault and the build succeeds.
func testBuildkitdRestart(t *testing.T, e *asyncEnv) {
	id := testenv.RandomHex(t, 5)
	image := stackReg + "/e2e/buildkitd-restart:" + id
	body := buildTar(t, map[string][]byte{"Dockerfile": []byte("FROM " + baseImage + "\nARG BUILD_ID\nRUN echo restart-test $BUILD_ID && sleep 8 && echo $BUILD_ID > /id\n")},
		builder.BuildConfig{Image: image, BuildArgs: map[string]string{"BUILD_ID": id}}, nil, nil)

	before, ok := daemon.ReadRecord(filepath.Join(e.dir, "pids", "buildkitd.pid"))
	if !ok || !before.Alive() {
		t.Fatalf("buildkitd does not run (PID file %s)", filepath.Join(e.dir, "pids", "buildkitd.pid"))
	}

	// Streamed, through build-fn's root address, to see the step start.
	st := testenv.Follow(t, testenv.Post(t, builderRoot+"/build", body, testenv.SignedHeader(e.key, body, true)))
	st.WaitLog(t, "sleep 8")
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	defer func() {
		// Whatever failed, the later subtests need a buildkitd.
		if r, ok := daemon.ReadRecord(filepath.Join(e.dir, "pids", "buildkitd.pid")); !ok || !r.Alive() {
			if out, err := runErr(e.bin, e.repo, 5*time.Minute, "restart", "--dir", e.dir, "buildkitd"); err != nil {
				t.Errorf("restart buildkitd: %v\n%s", err, out)
			}
		}
	}()
	if err := syscall.Kill(-before.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill buildkitd's process group %d: %v", before.PID, err)
	}
	testenv.WaitFor(t, fmt.Sprintf("buildkitd (%d) to end after SIGKILL", before.PID), func() error {
		if before.Ours() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	t.Logf("buildkitd (PID %d) killed mid-step", before.PID)
	// Down long enough for a retry to find nothing listening.
	time.Sleep(4 * time.Second)

	// Brought back by restart, which (unlike up when the checkout changed)
	// never redeploys build-fn under the running build.
	out := run(t, e.bin, e.repo, 5*time.Minute, "restart", "--dir", e.dir, "buildkitd")
	restartedAfter := time.Since(t0)
	after, ok := daemon.ReadRecord(filepath.Join(e.dir, "pids", "buildkitd.pid"))
	if !ok || !after.Alive() || after.PID == before.PID || !regexp.MustCompile(`buildkitd +started`).MatchString(out) {
		t.Fatalf("restart did not bring buildkitd back (before PID %d, after %+v):\n%s", before.PID, after, out)
	}
	t.Logf("buildkitd back %s after the kill (PID %d)", restartedAfter.Round(100*time.Millisecond), after.PID)

	final := st.Final(t, 5*time.Minute)
	log := strings.Split(st.LogText(), "\n")
	if final.Status != "success" || final.Image != image {
		t.Fatalf("final: status %q image %q error %q; log:\n%s", final.Status, final.Image, final.Error, st.LogText())
	}
	// One retry for the broken build, one (at least) for the daemon down.
	retries := grepLines(log, "transient error, retrying")
	if strings.Count(retries, "transient error, retrying") < 2 || !strings.Contains(retries, "connection refused") {
		t.Errorf("want a retry for the broken build and one for buildkitd down (connection refused); log:\n%s", strings.Join(log, "\n"))
	}
	t.Logf("build succeeded %s after the kill; retries:\n%s", time.Since(t0).Round(100*time.Millisecond), retries)
	if got := testenv.ImageFile(t, stackRegistry(t, e.dir), "e2e/buildkitd-restart", id, "/id"); strings.TrimSpace(string(got)) != id {
		t.Errorf("/id in %s = %q, want %q", image, got, id)
	}
}

func grepLines(log []string, substr string) string {
	var out []string
	for _, l := range log {
		if strings.Contains(l, substr) {
			out = append(out, "  "+l)
		}
	}
	return strings.Join(out, "\n")
}

// 2. A build longer than the queue-workers' ack_wait is delivered again
// with the same X-Call-Id; build-fn runs one build and answers every
// delivery with its result.
func testRedelivery(t *testing.T, e *asyncEnv) {
	const ackWait = 5 * time.Second
	qwLogs := logOffsets(e.dir, "queue-worker-1", "queue-worker-2")
	out := run(t, e.bin, e.repo, 5*time.Minute, "up", "--dir", e.dir, "--ack-wait", ackWait.String())
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		from := logOffsets(e.dir, "queue-worker-1", "queue-worker-2")
		out := run(t, e.bin, e.repo, 5*time.Minute, "up", "--dir", e.dir)
		if n := strings.Count(out, "with other settings"); n != 2 {
			t.Errorf("up without --ack-wait restarted %d queue-workers, want 2:\n%s", n, out)
		}
		if got := strings.Count(logsSince(e.dir, from), "Wait for  20m0s"); got != 2 {
			t.Errorf("after up without --ack-wait, %d queue-workers say ack_wait 20m0s, want 2:\n%s", got, logsSince(e.dir, from))
		}
	}
	defer restore()
	if n := strings.Count(out, "with other settings"); n != 2 {
		t.Fatalf("up --ack-wait %s restarted %d queue-workers, want 2:\n%s", ackWait, n, out)
	}
	if got := strings.Count(logsSince(e.dir, qwLogs), "Wait for  "+ackWait.String()); got != 2 {
		t.Fatalf("%d queue-workers say ack_wait %s, want 2:\n%s", got, ackWait, logsSince(e.dir, qwLogs))
	}

	id := testenv.RandomHex(t, 5)
	image := stackReg + "/e2e/redelivery:" + id
	body := buildTar(t, map[string][]byte{"Dockerfile": []byte("FROM " + baseImage + "\nARG BUILD_ID\nRUN echo redelivery $BUILD_ID && sleep 12 && echo $BUILD_ID > /id\n")},
		builder.BuildConfig{Image: image, BuildArgs: map[string]string{"BUILD_ID": id}}, nil, nil)
	m0 := e.buildMetrics(t)
	qwLogs = logOffsets(e.dir, "queue-worker-1", "queue-worker-2")
	t0 := time.Now()
	callID := e.submit(t, body, "application/octet-stream", e.cb.URL)

	first, ok := e.cb.next(t, callID, 5*time.Minute)
	if !ok {
		t.Fatalf("no callback for %s within 5m", callID)
	}
	cbs := []callback.Callback{first}
	// Every further delivery answers at once from the stored result; the
	// queue settles when nothing comes for two ack_waits.
	for {
		c, ok := e.cb.next(t, callID, 2*ackWait+2*time.Second)
		if !ok {
			break
		}
		cbs = append(cbs, c)
		if len(cbs) > 20 {
			t.Fatalf("more than 20 callbacks for %s: the queue never settles", callID)
		}
	}
	m1 := e.buildMetrics(t)
	deliveries := strings.Count(logsSince(e.dir, qwLogs), "Received on [faas-request]")
	withID := 0
	for _, l := range strings.Split(logsSince(e.dir, qwLogs), "\n") {
		if strings.Contains(l, "Received on [faas-request]") && strings.Contains(l, callID) {
			withID++
		}
	}
	t.Logf("%s: %d deliveries in the queue-worker logs (%d naming the call id), %d callbacks in %s",
		callID, deliveries, withID, len(cbs), time.Since(t0).Round(100*time.Millisecond))

	if withID < 2 {
		t.Errorf("the queue-workers received %s %d time(s), want a redelivery (ack_wait %s, build ~12s):\n%s", callID, withID, ackWait, logsSince(e.dir, qwLogs))
	}
	if len(cbs) < 2 {
		t.Errorf("%d callback(s) for %s, want one per delivery (at least 2)", len(cbs), callID)
	}
	if got := m1["fnbuilder_build_duration_seconds_count"] - m0["fnbuilder_build_duration_seconds_count"]; got != 1 {
		t.Errorf("build-fn ran %v builds for one call id delivered %d times, want exactly 1", got, withID)
	}
	if got := m1["fnbuilder_http_requests_total"] - m0["fnbuilder_http_requests_total"]; int(got) != len(cbs) {
		t.Errorf("build-fn answered %v build requests, want one per callback (%d)", got, len(cbs))
	}
	if m1["fnbuilder_builds_inflight"] != 0 {
		t.Errorf("fnbuilder_builds_inflight = %v after the queue settled", m1["fnbuilder_builds_inflight"])
	}
	original := 0
	for i, c := range cbs {
		res := parseResult(t, c.Body)
		replayed := c.Header.Get("X-Fnbuilder-Replayed")
		t.Logf("callback %d at +%s: X-Function-Status %s, replayed %q, status %s", i+1, c.At.Sub(t0).Round(100*time.Millisecond), c.Status(), replayed, res.Status)
		if c.Status() != "200" || res.Status != "success" || res.Image != image {
			t.Errorf("callback %d: X-Function-Status %s, status %q, image %q, error %q", i+1, c.Status(), res.Status, res.Image, res.Error)
		}
		if !bytes.Equal(bytes.TrimSpace(c.Body), bytes.TrimSpace(cbs[0].Body)) {
			t.Errorf("callback %d's body differs from callback 1's:\n%s\n---\n%s", i+1, c.Body, cbs[0].Body)
		}
		switch replayed {
		case "":
			original++
		case "true":
		default:
			t.Errorf("callback %d: X-Fnbuilder-Replayed %q", i+1, replayed)
		}
	}
	if original != 1 {
		t.Errorf("%d callbacks are not marked X-Fnbuilder-Replayed, want exactly 1 (the build itself)", original)
	}
	if got := testenv.ImageFile(t, stackRegistry(t, e.dir), "e2e/redelivery", id, "/id"); strings.TrimSpace(string(got)) != id {
		t.Errorf("/id in %s = %q, want %q", image, got, id)
	}
	restore()
}
