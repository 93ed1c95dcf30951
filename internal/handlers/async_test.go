package handlers_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/contextref"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/deploy/deploytest"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/results"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const asyncCallID = "0c5f2d3e-7a41-4b8e-9d1f-6e2a8b7c9d01"

func withResults(t *testing.T) option {
	dir := t.TempDir()
	return func(o *handlers.BuildOptions) {
		store, err := results.New(dir, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		o.Results = store
	}
}

// withCallID is a signed build request carrying X-Call-Id.
func (f *fixture) withCallID(body []byte, accept, id string) *http.Request {
	f.t.Helper()
	req := f.request(nil, http.MethodPost, body, accept)
	req.Header.Set("X-Call-Id", id)
	return req
}

type asyncReply struct {
	res  *http.Response
	data []byte
	err  error
}

// send does req in the background; the reply arrives on the channel.
func (f *fixture) send(req *http.Request) <-chan asyncReply {
	ch := make(chan asyncReply, 1)
	go func() {
		res, err := f.srv.Client().Do(req)
		if err != nil {
			ch <- asyncReply{err: err}
			return
		}
		defer res.Body.Close()
		data, err := io.ReadAll(res.Body)
		ch <- asyncReply{res: res, data: data, err: err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan asyncReply) asyncReply {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r
	case <-time.After(testenv.HangGuard):
		t.Fatal("hang guard: no reply")
		return asyncReply{}
	}
}

func TestCallIDRedeliveryJoinsRunningBuild(t *testing.T) {
	b := newBlocking()
	f := newFixture(t, b.run, withResults(t), func(o *handlers.BuildOptions) { o.Slots = schedule.New(1, 0) })
	release := sync.OnceFunc(func() { close(b.release) })
	t.Cleanup(release) // a failed test must not leave the build blocked
	body := makeTar(t)

	first := f.send(f.withCallID(body, "", asyncCallID))
	b.waitStarted(t)
	second := f.send(f.withCallID(body, "", asyncCallID))
	// The only slot is taken: a second delivery that did not join would
	// have been answered 429 at once.
	select {
	case r := <-second:
		t.Fatalf("redelivery answered while the first build runs: %v %d %s", r.err, r.res.StatusCode, r.data)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	r1, r2 := await(t, first), await(t, second)

	if r1.res.StatusCode != http.StatusOK || r2.res.StatusCode != http.StatusOK {
		t.Fatalf("status %d and %d, want 200 both: %s / %s", r1.res.StatusCode, r2.res.StatusCode, r1.data, r2.data)
	}
	if got := decodeOne(t, r1.data); got.Status != progress.Success || got.Image != testImage {
		t.Fatalf("first reply %+v", got)
	}
	if !bytes.Equal(bytes.TrimSpace(r1.data), bytes.TrimSpace(r2.data)) {
		t.Fatalf("replies differ:\n%s\n%s", r1.data, r2.data)
	}
	if r1.res.Header.Get("X-Fnbuilder-Replayed") != "" {
		t.Fatal("first delivery marked as replayed")
	}
	if r2.res.Header.Get("X-Fnbuilder-Replayed") != "true" {
		t.Fatal("joined delivery not marked as replayed")
	}
	if ct := r2.res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("replay Content-Type %q", ct)
	}

	// A delivery after the build is done gets the stored result.
	r3 := await(t, f.send(f.withCallID(body, "", asyncCallID)))
	if r3.res.StatusCode != http.StatusOK || !bytes.Equal(bytes.TrimSpace(r1.data), bytes.TrimSpace(r3.data)) {
		t.Fatalf("late redelivery: %d %s", r3.res.StatusCode, r3.data)
	}
	if r3.res.Header.Get("X-Fnbuilder-Replayed") != "true" {
		t.Fatal("late redelivery not marked as replayed")
	}
	if n := f.runner.calls.Load(); n != 1 {
		t.Fatalf("runner called %d times, want 1", n)
	}
	// The slot was given back: a new call id builds.
	r4 := await(t, f.send(f.withCallID(body, "", "another-call")))
	if r4.res.StatusCode != http.StatusOK || f.runner.calls.Load() != 2 {
		t.Fatalf("new call id: %d %s, runner calls %d", r4.res.StatusCode, r4.data, f.runner.calls.Load())
	}
	waitEmpty(t, f.opts.SpoolDir)
}

func TestCallIDRedeliveryNDJSON(t *testing.T) {
	f := newFixture(t, emit("v: step one", "v: step two"), withResults(t))
	body := makeTar(t)

	r1 := await(t, f.send(f.withCallID(body, ndjson, asyncCallID)))
	first := ndjsonLines(t, r1.data)
	final1 := checkFinal(t, first, progress.Success)

	r2 := await(t, f.send(f.withCallID(body, ndjson, asyncCallID)))
	if r2.res.StatusCode != http.StatusOK || r2.res.Header.Get("X-Fnbuilder-Replayed") != "true" {
		t.Fatalf("redelivery: %d replayed=%q", r2.res.StatusCode, r2.res.Header.Get("X-Fnbuilder-Replayed"))
	}
	if ct := r2.res.Header.Get("Content-Type"); ct != ndjson {
		t.Fatalf("redelivery Content-Type %q", ct)
	}
	second := ndjsonLines(t, r2.data)
	final2 := checkFinal(t, second, progress.Success)
	if final1.Image != final2.Image || final1.Status != final2.Status {
		t.Fatalf("final lines differ: %+v vs %+v", final1, final2)
	}
	if strings.Join(allLog(first), "|") != strings.Join(allLog(second), "|") {
		t.Fatalf("replayed log %q, want %q", allLog(second), allLog(first))
	}

	// A buffered redelivery of the same call gets the JSON object.
	r3 := await(t, f.send(f.withCallID(body, "", asyncCallID)))
	if got := decodeOne(t, r3.data); r3.res.StatusCode != http.StatusOK || got.Status != progress.Success || got.Image != testImage {
		t.Fatalf("buffered redelivery: %d %s", r3.res.StatusCode, r3.data)
	}
	if n := f.runner.calls.Load(); n != 1 {
		t.Fatalf("runner called %d times, want 1", n)
	}
}

func TestCallIDFailedBuildIsReplayed(t *testing.T) {
	f := newFixture(t, func(context.Context, buildkit.Build, func([]string)) error {
		return errors.New(failureError)
	}, withResults(t))
	body := makeTar(t)
	r1 := await(t, f.send(f.withCallID(body, "", asyncCallID)))
	r2 := await(t, f.send(f.withCallID(body, "", asyncCallID)))
	for i, r := range []asyncReply{r1, r2} {
		if r.res.StatusCode != http.StatusInternalServerError {
			t.Fatalf("delivery %d: status %d, want 500", i+1, r.res.StatusCode)
		}
		if got := decodeOne(t, r.data); got.Status != progress.Failed || got.Error != failureError {
			t.Fatalf("delivery %d: %+v", i+1, got)
		}
	}
	if n := f.runner.calls.Load(); n != 1 {
		t.Fatalf("runner called %d times, want 1", n)
	}

	// The NDJSON replay of a failed build is a stream with a failed end.
	r3 := await(t, f.send(f.withCallID(body, ndjson, asyncCallID)))
	if r3.res.StatusCode != http.StatusOK {
		t.Fatalf("NDJSON replay status %d", r3.res.StatusCode)
	}
	if last := checkFinal(t, ndjsonLines(t, r3.data), progress.Failed); last.Error != failureError {
		t.Fatalf("final line %+v", last)
	}
}

func TestCallIDReusedForOtherBody(t *testing.T) {
	f := newFixture(t, nil, withResults(t))
	r1 := await(t, f.send(f.withCallID(makeTar(t), "", asyncCallID)))
	if r1.res.StatusCode != http.StatusOK {
		t.Fatalf("first: %d %s", r1.res.StatusCode, r1.data)
	}
	other := makeTar(t, testenv.File("context/extra.txt", "different"))
	r2 := await(t, f.send(f.withCallID(other, "", asyncCallID)))
	e := checkErrorReply(t, r2.res, r2.data, http.StatusConflict)
	if !strings.Contains(e.Error, asyncCallID) {
		t.Fatalf("409 error does not name the call id: %q", e.Error)
	}
	if n := f.runner.calls.Load(); n != 1 {
		t.Fatalf("runner called %d times, want 1", n)
	}
}

func TestCallIDIgnoredWithoutStore(t *testing.T) {
	f := newFixture(t, nil)
	body := makeTar(t)
	for range 2 {
		r := await(t, f.send(f.withCallID(body, "", asyncCallID)))
		if r.res.StatusCode != http.StatusOK || r.res.Header.Get("X-Fnbuilder-Replayed") != "" {
			t.Fatalf("status %d replayed=%q", r.res.StatusCode, r.res.Header.Get("X-Fnbuilder-Replayed"))
		}
	}
	if n := f.runner.calls.Load(); n != 2 {
		t.Fatalf("runner called %d times without a results store, want 2", n)
	}
}

// resultServer serves GET /results/{id} over the fixture's options.
func (f *fixture) resultServer() *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/results/{id}", handlers.MakeResultHandler(f.opts))
	srv := httptest.NewServer(mux)
	f.t.Cleanup(srv.Close)
	return srv
}

func getResult(t *testing.T, srv *httptest.Server, id, sig string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/results/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sig != "" {
		req.Header.Set("X-Build-Signature", sig)
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, data
}

func signID(id string) string { return testenv.Sign([]byte(payloadText), []byte(id)) }

func TestResultFetch(t *testing.T) {
	b := newBlocking()
	f := newFixture(t, b.run, withResults(t))
	release := sync.OnceFunc(func() { close(b.release) })
	t.Cleanup(release)
	rs := f.resultServer()

	if res, data := getResult(t, rs, asyncCallID, signID(asyncCallID)); res.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown id: %d %s", res.StatusCode, data)
	}

	build := f.send(f.withCallID(makeTar(t), "", asyncCallID))
	b.waitStarted(t)
	res, data := getResult(t, rs, asyncCallID, signID(asyncCallID))
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("while running: %d %s, want 202", res.StatusCode, data)
	}
	var running map[string]string
	if err := json.Unmarshal(data, &running); err != nil || running["status"] != "in_progress" {
		t.Fatalf("while running: %s", data)
	}
	release()
	built := await(t, build)

	for name, sig := range map[string]string{
		"unsigned":     "",
		"malformed":    "sha256=xyz",
		"other id":     signID("another-call"),
		"other key":    testenv.Sign([]byte("wrong key"), []byte(asyncCallID)),
		"signed body?": testenv.Sign([]byte(payloadText), makeTar(t)),
	} {
		res, data := getResult(t, rs, asyncCallID, sig)
		checkErrorReply(t, res, data, http.StatusUnauthorized)
		if bytes.Contains(data, []byte(testImage)) {
			t.Fatalf("%s: 401 leaks the result: %s", name, data)
		}
	}

	res, data = getResult(t, rs, asyncCallID, signID(asyncCallID))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("stored: %d %s", res.StatusCode, data)
	}
	if got := res.Header.Get("X-Build-Code"); got != "200" {
		t.Fatalf("X-Build-Code %q, want 200", got)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if !bytes.Equal(bytes.TrimSpace(data), bytes.TrimSpace(built.data)) {
		t.Fatalf("stored result\n%s\nwant the build's reply\n%s", data, built.data)
	}

	for _, id := range []string{"-starts-with-dash", strings.Repeat("a", 200), "a%20b"} {
		res, data := getResult(t, rs, id, signID(id))
		checkErrorReply(t, res, data, http.StatusBadRequest)
	}
	if res, data := getResult(t, rs, "never-built", signID("never-built")); res.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown id: %d %s", res.StatusCode, data)
	}

	post, err := rs.Client().Post(rs.URL+"/results/"+asyncCallID, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", post.StatusCode)
	}
}

func TestResultFetchFailedBuild(t *testing.T) {
	f := newFixture(t, func(context.Context, buildkit.Build, func([]string)) error {
		return errors.New(failureError)
	}, withResults(t))
	rs := f.resultServer()
	await(t, f.send(f.withCallID(makeTar(t), ndjson, asyncCallID)))
	res, data := getResult(t, rs, asyncCallID, signID(asyncCallID))
	if res.StatusCode != http.StatusOK || res.Header.Get("X-Build-Code") != "500" {
		t.Fatalf("status %d X-Build-Code %q, want 200 and 500", res.StatusCode, res.Header.Get("X-Build-Code"))
	}
	if got := decodeOne(t, data); got.Status != progress.Failed || got.Error != failureError || got.Image != testImage {
		t.Fatalf("stored %+v", got)
	}
}

func TestResultFetchWithoutStore(t *testing.T) {
	f := newFixture(t, nil)
	res, data := getResult(t, f.resultServer(), asyncCallID, signID(asyncCallID))
	checkErrorReply(t, res, data, http.StatusNotFound)
}

// refServer serves a build tar as a context reference would point at it.
type refServer struct {
	srv    *httptest.Server
	hits   atomic.Int32
	status atomic.Int32
	body   []byte
}

func newRefServer(t *testing.T, body []byte) *refServer {
	rs := &refServer{body: body}
	rs.status.Store(http.StatusOK)
	rs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.hits.Add(1)
		if code := int(rs.status.Load()); code != http.StatusOK {
			http.Error(w, http.StatusText(code), code)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(rs.body)))
		w.Write(rs.body)
	}))
	t.Cleanup(rs.srv.Close)
	return rs
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (f *fixture) postRef(url, digest, accept string) (*http.Response, []byte) {
	f.t.Helper()
	ref, _ := json.Marshal(contextref.Ref{URL: url, Digest: digest})
	req := f.request(nil, http.MethodPost, ref, accept)
	req.Header.Set("Content-Type", contextref.MediaType)
	return f.read(req)
}

func withFetch(max int64) option {
	return func(o *handlers.BuildOptions) {
		o.Fetch = &http.Client{Timeout: 10 * time.Second}
		o.MaxFetchBytes = max
		o.Retry = pipeline.Backoff{Attempts: 3, First: time.Millisecond, Max: 2 * time.Millisecond}
	}
}

func TestContextReference(t *testing.T) {
	const refImage = "127.0.0.1:5000/fnbuilder/from-ref:2"
	tarBody := configTar(t, map[string]any{"image": refImage})
	var mu sync.Mutex
	var images []string
	f := newFixture(t, func(_ context.Context, b buildkit.Build, logf func([]string)) error {
		mu.Lock()
		images = append(images, b.Image)
		mu.Unlock()
		logf([]string{"v: built"})
		return nil
	}, withFetch(1<<20))
	rs := newRefServer(t, tarBody)
	url := rs.srv.URL + "/blobs/ctx.tar"

	t.Run("good", func(t *testing.T) {
		res, data := f.postRef(url, sha256Digest(tarBody), "")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", res.StatusCode, data)
		}
		if got := decodeOne(t, data); got.Status != progress.Success || got.Image != refImage {
			t.Fatalf("reply %+v", got)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(images) != 1 || images[0] != refImage {
			t.Fatalf("runner built %q, want %q from the referenced tar", images, refImage)
		}
		waitEmpty(t, f.opts.SpoolDir)
	})

	t.Run("good NDJSON", func(t *testing.T) {
		res, data := f.postRef(url, sha256Digest(tarBody), ndjson)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", res.StatusCode, data)
		}
		lines := ndjsonLines(t, data)
		if last := lines[len(lines)-1]; last.Status != progress.Success || last.Image != refImage {
			t.Fatalf("final line %+v", last)
		}
		waitEmpty(t, f.opts.SpoolDir)
	})

	calls := f.runner.calls.Load()
	for _, tc := range []struct {
		name     string
		status   int
		digest   string
		url      string
		want     int
		wantHits int32
	}{
		{"wrong digest", http.StatusOK, sha256Digest([]byte("other")), url, http.StatusBadRequest, 1},
		{"404", http.StatusNotFound, sha256Digest(tarBody), url, http.StatusBadRequest, 1},
		{"403", http.StatusForbidden, sha256Digest(tarBody), url, http.StatusBadRequest, 1},
		{"503 every time", http.StatusServiceUnavailable, sha256Digest(tarBody), url, http.StatusBadGateway, 3},
		{"invalid digest", http.StatusOK, "sha256:abc", url, http.StatusBadRequest, 0},
		{"relative url", http.StatusOK, sha256Digest(tarBody), "/ctx.tar", http.StatusBadRequest, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs.status.Store(int32(tc.status))
			rs.hits.Store(0)
			res, data := f.postRef(tc.url, tc.digest, "")
			checkErrorReply(t, res, data, tc.want)
			if got := rs.hits.Load(); got != tc.wantHits {
				t.Fatalf("server hit %d times, want %d", got, tc.wantHits)
			}
			if n := f.runner.calls.Load(); n != calls {
				t.Fatalf("runner called for a refused reference")
			}
			waitEmpty(t, f.opts.SpoolDir)
		})
	}

	t.Run("unsigned", func(t *testing.T) {
		rs.status.Store(http.StatusOK)
		rs.hits.Store(0)
		ref, _ := json.Marshal(contextref.Ref{URL: url, Digest: sha256Digest(tarBody)})
		req := f.request(nil, http.MethodPost, ref, "")
		req.Header.Set("Content-Type", contextref.MediaType)
		req.Header.Set("X-Build-Signature", testenv.Sign([]byte("not the key"), ref))
		res := f.do(req)
		data, _ := io.ReadAll(res.Body)
		checkErrorReply(t, res, data, http.StatusUnauthorized)
		if rs.hits.Load() != 0 {
			t.Fatal("an unverified reference was fetched")
		}
	})

	t.Run("recovers after 503", func(t *testing.T) {
		rs.hits.Store(0)
		var flaky atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if flaky.Add(1) < 3 {
				http.Error(w, "restarting", http.StatusServiceUnavailable)
				return
			}
			w.Write(tarBody)
		}))
		defer srv.Close()
		res, data := f.postRef(srv.URL+"/ctx.tar", sha256Digest(tarBody), "")
		if res.StatusCode != http.StatusOK || flaky.Load() != 3 {
			t.Fatalf("status %d after %d fetches: %s", res.StatusCode, flaky.Load(), data)
		}
		waitEmpty(t, f.opts.SpoolDir)
	})
}

func TestContextReferenceTooLarge(t *testing.T) {
	tarBody := configTar(t, map[string]any{"image": testImage})
	f := newFixture(t, nil, withFetch(int64(len(tarBody)-1)))
	rs := newRefServer(t, tarBody)
	res, data := f.postRef(rs.srv.URL+"/ctx.tar", sha256Digest(tarBody), ndjson)
	checkErrorReply(t, res, data, http.StatusRequestEntityTooLarge)
	if rs.hits.Load() != 1 {
		t.Fatalf("oversize fetch tried %d times, want 1", rs.hits.Load())
	}
	if f.runner.calls.Load() != 0 {
		t.Fatal("runner called for an oversize reference")
	}
	waitEmpty(t, f.opts.SpoolDir)
}

func withGateway(gw deploy.Gateway) option {
	return func(o *handlers.BuildOptions) {
		o.Pipeline.Gateway = func() (deploy.Gateway, error) { return gw, nil }
	}
}

func deployTar(t *testing.T) []byte {
	return configTar(t, map[string]any{"image": testImage, "deploy": map[string]any{"name": "hello", "labels": map[string]string{"team": "a"}}})
}

func TestDeployAfterBuild(t *testing.T) {
	for _, accept := range []string{"", ndjson} {
		gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusNotFound}, DeployCodes: []int{http.StatusAccepted}}
		f := newFixture(t, nil, withGateway(gw))
		res, data := f.post(deployTar(t), accept)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("accept %q: status %d: %s", accept, res.StatusCode, data)
		}
		var final progress.Result
		if accept == ndjson {
			final = checkFinal(t, ndjsonLines(t, data), progress.Success)
		} else {
			final = decodeOne(t, data)
		}
		if final.Status != progress.Success || final.Deploy == nil {
			t.Fatalf("accept %q: final %+v", accept, final)
		}
		want := progress.Deployed{Name: "hello", Image: testImage + "@" + fakeDigest, Action: "created"}
		if *final.Deploy != want || final.Digest != fakeDigest || final.Image != testImage {
			t.Fatalf("accept %q: final %+v, deploy %+v; want digest %s, deploy %+v", accept, final, *final.Deploy, fakeDigest, want)
		}
		if u, d := gw.Calls(); u != 1 || d != 1 {
			t.Fatalf("accept %q: gateway %d updates, %d deploys", accept, u, d)
		}
		if sent := gw.Deploys()[0]; sent.Image != testImage+"@"+fakeDigest || sent.Service != "hello" || (*sent.Labels)["team"] != "a" {
			t.Fatalf("deployment sent %+v", sent)
		}
	}
}

func TestFailedBuildIsNotDeployed(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	f := newFixture(t, func(context.Context, buildkit.Build, func([]string)) error {
		return errors.New(failureError)
	}, withGateway(gw))
	res, data := f.post(deployTar(t), "")
	if res.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	if got := decodeOne(t, data); got.Status != progress.Failed || got.Deploy != nil || got.Error != failureError {
		t.Fatalf("reply %+v", got)
	}
	if u, d := gw.Calls(); u+d != 0 {
		t.Fatalf("gateway called %d+%d times after a failed build", u, d)
	}
}

func TestDeployRefusedByGateway(t *testing.T) {
	for _, accept := range []string{"", ndjson} {
		gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusBadRequest}}
		f := newFixture(t, nil, withGateway(gw))
		res, data := f.post(deployTar(t), accept)
		var final progress.Result
		if accept == ndjson {
			final = checkFinal(t, ndjsonLines(t, data), progress.Failed)
		} else {
			if res.StatusCode != http.StatusInternalServerError {
				t.Fatalf("status %d: %s", res.StatusCode, data)
			}
			final = decodeOne(t, data)
		}
		if final.Status != progress.Failed || final.Image != testImage || final.Deploy != nil ||
			!strings.Contains(final.Error, "deploy failed") || !strings.Contains(final.Error, "400") {
			t.Fatalf("accept %q: final %+v", accept, final)
		}
		if f.runner.calls.Load() != 1 {
			t.Fatalf("runner called %d times", f.runner.calls.Load())
		}
		if u, d := gw.Calls(); u != 1 || d != 0 {
			t.Fatalf("gateway %d updates, %d deploys; want 1, 0", u, d)
		}
	}
}

func TestDeploySpecWithoutGateway(t *testing.T) {
	f := newFixture(t, nil) // Pipeline.Gateway is nil
	res, data := f.post(deployTar(t), "")
	e := checkErrorReply(t, res, data, http.StatusBadRequest)
	if !strings.Contains(e.Error, "gateway") {
		t.Fatalf("error %q", e.Error)
	}
	if f.runner.calls.Load() != 0 {
		t.Fatal("built although the deploy cannot happen")
	}
}
