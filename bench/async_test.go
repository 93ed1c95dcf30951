package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// The local stack (cmd/fnb-stack), as `make up` leaves it.
const (
	stackGateway  = "http://127.0.0.1:8080"
	stackRegistry = "127.0.0.1:5001"
	stackBase     = stackRegistry + "/busybox:latest"
	stackMarker   = "/run/fnbuilder-stack.active"
	asyncBuilds   = 100
)

func stackDir() string {
	if d := strings.TrimSpace(os.Getenv("FNB_STACK_DIR")); d != "" {
		return d
	}
	return "/var/lib/fnbuilder-stack"
}

// stackUnavailable says why the async figure cannot be taken, or "".
func stackUnavailable() string {
	if os.Getenv("FNB_BENCH_STACK") == "0" {
		return "FNB_BENCH_STACK=0"
	}
	marker, err := os.ReadFile(stackMarker)
	if err != nil {
		return "the local stack is not up (`make up` first; " + stackMarker + " is missing)"
	}
	// Only the stack `make up` leaves, never one a test brought up for
	// itself (the ports are global, so there is one at a time).
	if up := strings.TrimSpace(string(marker)); up != stackDir() {
		return fmt.Sprintf("the stack that is up is %s, not %s (FNB_STACK_DIR): a test's own stack is left alone", up, stackDir())
	}
	c := &http.Client{Timeout: 5 * time.Second}
	for _, p := range []string{"/healthz", "/function/build-fn/healthz"} {
		res, err := c.Get(stackGateway + p)
		if err != nil {
			return "the local stack's gateway does not answer: " + err.Error()
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Sprintf("the local stack answers GET %s with %d", p, res.StatusCode)
		}
	}
	if _, err := os.Stat(filepath.Join(stackDir(), "secrets", "payload-secret")); err != nil {
		return "the local stack's payload secret is missing: " + err.Error()
	}
	return ""
}

// callback is one delivery to the receiver.
type callback struct {
	callID, fnStatus, replayed string
	result                     progress.Result
	at                         time.Time
}

// receiver collects queue-worker callbacks on loopback (the queue-workers
// run on this host).
type receiver struct {
	url string
	mu  sync.Mutex
	got []callback
	srv *http.Server
}

func startReceiver(t *testing.T) *receiver {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{url: "http://" + l.Addr().String() + "/callback"}
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		cb := callback{
			callID:   req.Header.Get("X-Call-Id"),
			fnStatus: req.Header.Get("X-Function-Status"),
			replayed: req.Header.Get("X-Fnbuilder-Replayed"),
			at:       time.Now(),
		}
		_ = json.Unmarshal(body, &cb.result)
		r.mu.Lock()
		r.got = append(r.got, cb)
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}
	go r.srv.Serve(l)
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *receiver) byID() map[string][]callback {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]callback{}
	for _, cb := range r.got {
		out[cb.callID] = append(out[cb.callID], cb)
	}
	return out
}

// async submits 100 builds to /async-function/build-fn of the running
// local stack (gateway → NATS → two queue-workers → build-fn with
// max_builds=2 → the stack's buildkitd), waits for their callbacks, and
// divides the wall time by 100 sequential buildctl builds of the same
// kind on the same buildkitd.
func (r *report) async(t *testing.T, _ *stack) {
	const what = "100 async builds through the local stack's queue, two queue-workers"
	if why := stackUnavailable(); why != "" {
		r.add(what, "not measured: "+why, "", "")
		return
	}
	payload, err := os.ReadFile(filepath.Join(stackDir(), "secrets", "payload-secret"))
	if err != nil {
		t.Fatal(err)
	}
	key := signature.Key(payload)
	run := strconv.FormatInt(time.Now().Unix(), 36)
	request := func(tag string, i int) (contextSpec, string) {
		return contextSpec{Dockerfile: fmt.Sprintf("FROM %s\nRUN echo %s-%d > /id\n", stackBase, tag, i)},
			fmt.Sprintf("%s/bench-async:%s-%d", stackRegistry, tag, i)
	}

	rcv := startReceiver(t)
	client := &http.Client{Timeout: time.Minute}
	ids := map[string]int{}
	start := time.Now()
	var refused []string
	for i := range asyncBuilds {
		spec, image := request("q"+run, i)
		body := spec.Tar(image)
		req, _ := http.NewRequest(http.MethodPost, stackGateway+"/async-function/build-fn", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("X-Build-Signature", testenv.Sign(key, body))
		req.Header.Set("X-Callback-Url", rcv.url)
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("async submit %d: %v", i, err)
		}
		msg, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			refused = append(refused, fmt.Sprintf("%d: %s", res.StatusCode, bytes.TrimSpace(msg)))
			continue
		}
		ids[res.Header.Get("X-Call-Id")] = i
	}
	submitted := time.Since(start)
	say("  %d accepted in %s, waiting for callbacks", len(ids), secs(submitted))

	// Until every id has its callback, or nothing has come for stall
	// (one of these builds takes seconds), or the overall timeout.
	const timeout, stall = 30 * time.Minute, 3 * time.Minute
	deadline := time.Now().Add(timeout)
	progressAt, lastDone := time.Now(), 0
	var last time.Time
	for {
		got := rcv.byID()
		done := 0
		for id := range ids {
			if len(got[id]) > 0 {
				done++
			}
		}
		if done != lastDone {
			progressAt, lastDone = time.Now(), done
			if done%10 == 0 {
				say("  %d of %d callbacks", done, len(ids))
			}
		}
		if done == len(ids) || time.Now().After(deadline) || time.Since(progressAt) > stall {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Late duplicates: give redeliveries a moment to show up.
	time.Sleep(5 * time.Second)

	got := rcv.byID()
	var completed, failed, lost, duplicated, unknown int
	var failures []string
	for id := range ids {
		cbs := got[id]
		if len(cbs) == 0 {
			lost++
			continue
		}
		duplicated += len(cbs) - 1
		cb := cbs[0]
		if cb.at.After(last) {
			last = cb.at
		}
		if cb.result.Status == progress.Success {
			completed++
		} else {
			failed++
			if len(failures) < 3 {
				failures = append(failures, fmt.Sprintf("%s %s: %s", cb.fnStatus, cb.result.Status, cb.result.Error))
			}
		}
	}
	for id, cbs := range got {
		if _, ok := ids[id]; !ok {
			unknown += len(cbs)
		}
	}
	if last.IsZero() {
		last = time.Now()
	}
	wall := last.Sub(start)
	say("  async: %d completed, %d failed, %d lost, %d duplicated in %s", completed, failed, lost, duplicated, secs(wall))

	// The same 100 builds (new tags, so nothing is cached but the base),
	// one after another with buildctl on the stack's own buildkitd.
	sock := "unix://" + filepath.Join(stackDir(), "buildkit", "buildkitd.sock")
	// buildctl logs in to the stack's registry as build-fn does.
	dockerConfig := t.TempDir()
	if b, err := os.ReadFile(filepath.Join(stackDir(), "secrets", "registry-config")); err == nil {
		if err := os.WriteFile(filepath.Join(dockerConfig, "config.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var seq time.Duration
	var seqErr error
	for i := range asyncBuilds {
		spec, image := request("c"+run, i)
		dir := t.TempDir()
		if err := spec.WriteDir(dir); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		cmd := exec.Command(daemon.Find("buildctl"), "--addr", sock, "build",
			"--progress=plain", "--frontend", "dockerfile.v0", "--local", "context="+dir, "--local", "dockerfile="+dir,
			"--output", "type=image,name="+image+",push=true,registry.insecure=true")
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig)
		if out, err := cmd.CombinedOutput(); err != nil {
			seqErr = fmt.Errorf("buildctl on the stack's buildkitd: %v: %s", err, tail(string(out), 500))
			break
		}
		seq += time.Since(t0)
	}

	result := fmt.Sprintf("%d completed, %d lost, %d duplicated (%d failed", completed, lost, duplicated, failed)
	if len(refused) > 0 {
		result += fmt.Sprintf(", %d refused at submit: %s", len(refused), refused[0])
	}
	if unknown > 0 {
		result += fmt.Sprintf(", %d callbacks for unknown ids", unknown)
	}
	result += ")"
	if len(failures) > 0 {
		r.notes = append(r.notes, "Async failures (first ones): "+strings.Join(failures, "; "))
	}
	if lost > 0 {
		r.notes = append(r.notes, fmt.Sprintf("Lost means no callback within %s of the first submission, or none for %s while others were missing.", timeout, stall))
	}
	fn := fmt.Sprintf("wall %s (submitting: %s)", secs(wall), secs(submitted))
	if seqErr != nil {
		r.add(what, fn, "not measured: "+seqErr.Error(), result)
		return
	}
	r.add(what, fn, fmt.Sprintf("100 × buildctl, sequential: %s", secs(seq)),
		fmt.Sprintf("%.2f× sequential; %s", wall.Seconds()/seq.Seconds(), result))
}
