package hardening

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestFaults breaks things while builds run. Each fault must end in a
// clean final status, a freed slot, a clean work_dir and a successful
// next build. They share one registry and buildkitd and run in order.
func TestFaults(t *testing.T) {
	s := startStack(t)
	t.Run("buildkitd killed mid-build", func(t *testing.T) { testBuildKitKilled(t, s) })
	t.Run("registry down during push", func(t *testing.T) { testRegistryDown(t, s) })
	t.Run("client disconnect", func(t *testing.T) { testClientGone(t, s) })
	t.Run("buildkitd restarted, build retried", func(t *testing.T) { testBuildKitRestarted(t, s) })
	t.Run("client gone mid-upload", func(t *testing.T) { testUploadCut(t, s) })
}

// testUploadCut: the client declares 8 MiB, sends 1 MiB and goes away.
// Nothing is built, the spooled part is removed and the slot is free.
func testUploadCut(t *testing.T, s *stack) {
	b := s.builderOn(t, map[string]string{"max_inflight": "1"})
	body := buildTar(t, "FROM "+s.Base+"\n", s.Reg.Addr+"/cut:1", testenv.File("context/blob", strings.Repeat("b", 8<<20)))
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(errors.New("test ended")) }) // also when a wait below fails
	req, _ := http.NewRequest(http.MethodPost, b.url+"/build", pr)
	req.ContentLength = int64(len(body))
	req.Header = testenv.SignedHeader(b.keys.payload, body, true)
	answered := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			err = fmt.Errorf("the cut upload got an answer: %d", res.StatusCode)
		} else {
			err = nil
		}
		answered <- err
	}()
	// The waits run here, not in the client's goroutine: t.Fatal must
	// not be called from any goroutine but the test's.
	_, _ = pw.Write(body[:1<<20])
	testenv.WaitFor(t, "the partial body to be spooled", func() error {
		if b.workDirLeft(t) == nil {
			return errors.New("work_dir is empty")
		}
		return nil
	})
	pw.CloseWithError(errors.New("client gone"))
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	b.waitWorkDirEmpty(t)
	slotFree(t, b)
	if b.Runs.Load() != 0 {
		t.Fatal("a cut upload reached BuildKit")
	}
	nextBuildSucceeds(t, s, b, "after-cut")
}

// nextBuildSucceeds builds a fresh image and checks it was pushed.
func nextBuildSucceeds(t *testing.T, s *stack, b *builder, repo string) {
	t.Helper()
	body := buildTar(t, "FROM "+s.Base+"\nRUN echo next-"+testenv.RandomHex(t, 4)+" > /next\n", s.Reg.Addr+"/"+repo+":1")
	fin, logs := final(t, testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(b.keys.payload, body, true)))
	if fin.Status != progress.Success {
		t.Fatalf("next build: %+v\n%s", fin, logs)
	}
	if !testenv.TagExists(t, s.Reg, repo, "1") {
		t.Fatalf("next build reported success but %s:1 is not in the registry", repo)
	}
	b.workDirEmpty(t)
}

// testBuildKitKilled: SIGKILL buildkitd during RUN sleep 30. The stream
// ends with "failed" well before the sleep would, the slot is free at
// once (a request during the outage is answered, not 429), and after a
// restart the next build succeeds.
func testBuildKitKilled(t *testing.T, s *stack) {
	b := s.builderOn(t, map[string]string{"max_inflight": "1", "build_retries": "2", "retry_backoff": "200ms"})
	st := b.streamRun(t, s, "echo start-"+testenv.RandomHex(t, 4)+" && sleep 30", "killed:1", "sleep 30")
	time.Sleep(500 * time.Millisecond)
	killedAt := time.Now()
	s.BK.Kill(t)
	t.Cleanup(func() {
		if !s.BK.Running() {
			s.BK.Restart(t)
		}
	})

	fin := st.Final(t, 20*time.Second)
	t.Logf("final line %s after the kill: %+v", time.Since(killedAt).Round(time.Millisecond), fin)
	if fin.Status != progress.Failed || fin.Error == "" {
		t.Fatalf("final %+v, want failed with an error\n%s", fin, st.LogText())
	}
	slotFree(t, b)
	b.workDirEmpty(t)

	// While buildkitd is down a request gets an answer (a failed build),
	// not 429: the killed build let its slot go.
	probe := buildTar(t, "FROM "+s.Base+"\n", s.Reg.Addr+"/probe:1")
	res := testenv.Post(t, b.url+"/build", probe, testenv.SignedHeader(b.keys.payload, probe, true))
	if testenv.Status(res) == http.StatusTooManyRequests {
		t.Fatal("429 after the killed build ended: its slot was not released")
	}
	if fin, _ := final(t, res); fin.Status != progress.Failed {
		t.Fatalf("build with buildkitd down: %+v", fin)
	}
	if testenv.TagExists(t, s.Reg, "killed", "1") {
		t.Fatal("the killed build pushed an image")
	}

	s.BK.Restart(t)
	nextBuildSucceeds(t, s, b, "after-kill")
}

// testRegistryDown: the push target does not listen. The build is tried
// once more (the registry may be restarting), not build_retries times, then
// fails naming the push; the slot is freed and a build to the live
// registry works.
func testRegistryDown(t *testing.T, s *stack) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	b := s.builderOn(t, map[string]string{
		"max_inflight": "1", "build_retries": "5", "retry_backoff": "100ms",
		"insecure_registries": s.Reg.Addr + "," + dead,
	})
	body := buildTar(t, "FROM "+s.Base+"\nRUN echo down-"+testenv.RandomHex(t, 4)+" > /x\n", dead+"/down:1")
	start := time.Now()
	fin, logs := final(t, testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(b.keys.payload, body, true)))
	t.Logf("failed after %s: %s", time.Since(start).Round(time.Millisecond), fin.Error)
	if fin.Status != progress.Failed || !strings.Contains(fin.Error, dead) {
		t.Fatalf("final %+v, want failed naming %s\n%s", fin, dead, logs)
	}
	if !strings.Contains(fin.Error, "push") && !strings.Contains(fin.Error, "connection refused") {
		t.Fatalf("error %q does not say the push failed", fin.Error)
	}
	if n := strings.Count(logs, "transient error, retrying"); n != 1 {
		t.Fatalf("%d retries in the log, want 1:\n%s", n, logs)
	}
	if n := b.Runs.Load(); n != 1 {
		t.Fatalf("%d runs through the outer runner, want 1 (retries happen inside)", n)
	}
	slotFree(t, b)
	b.workDirEmpty(t)
	nextBuildSucceeds(t, s, b, "after-registry-down")
}

// testClientGone: the client drops the connection mid-build. The solve's
// context is cancelled, the slot is freed, nothing is pushed, work_dir is
// emptied, and the next build succeeds.
func testClientGone(t *testing.T, s *stack) {
	b := s.builderOn(t, map[string]string{"max_inflight": "1"})
	body := buildTar(t, "FROM "+s.Base+"\nRUN echo gone-"+testenv.RandomHex(t, 4)+" && sleep 60\n", s.Reg.Addr+"/abandoned:1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := testenv.Follow(t, testenv.PostContext(t, ctx, b.url+"/build", strings.NewReader(string(body)), testenv.SignedHeader(b.keys.payload, body, true)))
	st.WaitLog(t, "sleep 60")
	gone := time.Now()
	cancel()

	select {
	case end := <-b.Ends:
		t.Logf("solve returned %s after the disconnect: %v", time.Since(gone).Round(time.Millisecond), end.Err)
		if !errors.Is(end.CtxErr, context.Canceled) {
			t.Fatalf("the solve's context was not cancelled (ctx err %v, run err %v)", end.CtxErr, end.Err)
		}
		if end.Err == nil {
			t.Fatal("the abandoned solve reported success")
		}
	case <-time.After(testenv.HangGuard):
		t.Fatalf("hang guard: the solve still runs %s after the client left", testenv.HangGuard)
	}
	slotFree(t, b)
	b.waitWorkDirEmpty(t)
	b.workDirEmpty(t)
	if testenv.TagExists(t, s.Reg, "abandoned", "1") {
		t.Fatal("the abandoned build was pushed")
	}
	nextBuildSucceeds(t, s, b, "after-disconnect")
}

// testBuildKitRestarted: buildkitd dies during a build and comes back 1.5 s
// later. With build_retries=4 and retry_backoff=1s the same request ends
// in success, and the retry shows in its log.
func testBuildKitRestarted(t *testing.T, s *stack) {
	b := s.builderOn(t, map[string]string{"max_inflight": "1", "build_retries": "4", "retry_backoff": "1s"})
	st := b.streamRun(t, s, "echo retried-"+testenv.RandomHex(t, 4)+" && sleep 3 && echo ok > /ok", "retried:1", "sleep 3")
	time.Sleep(300 * time.Millisecond)
	s.BK.Kill(t)
	time.Sleep(1500 * time.Millisecond)
	restarted := time.Now()
	s.BK.Restart(t)
	t.Logf("buildkitd back after %s", time.Since(restarted).Round(time.Millisecond))

	fin := st.Final(t, 2*time.Minute)
	logs := st.LogText()
	if fin.Status != progress.Success {
		t.Fatalf("final %+v, want success after a retry\n%s", fin, logs)
	}
	// How many retries it takes depends on how soon buildkitd is back
	// (the first retry may find it still down): at least one, and fewer
	// than build_retries, or the build would have failed.
	if n := strings.Count(logs, "transient error, retrying"); n < 1 || n > 3 {
		t.Fatalf("%d retries in the log, want 1 to 3:\n%s", n, logs)
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "transient error") {
			t.Logf("%s", l)
		}
	}
	if !testenv.TagExists(t, s.Reg, "retried", "1") {
		t.Fatal("retried:1 is not in the registry")
	}
	slotFree(t, b)
	b.workDirEmpty(t)
	nextBuildSucceeds(t, s, b, "after-restart")
}
