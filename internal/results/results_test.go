package results_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/results"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const callID = "8f14e45f-ceea-467f-a9e4-1f1e3b5c6d7a"

func newStore(t *testing.T, dir string, ttl time.Duration) *results.Store {
	t.Helper()
	s, err := results.New(dir, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func okResult(image string) results.Result {
	body, _ := json.Marshal(map[string]string{"status": "success", "image": image})
	return results.Result{Code: 200, Body: body, Request: "sha256=abc"}
}

// do is Do for callers that never leave.
func do(s *results.Store, id string, build func() results.Result) (results.Result, bool) {
	res, shared, err := s.Do(context.Background(), id, build)
	if err != nil {
		panic("Do with a context that never ends: " + err.Error())
	}
	return res, shared
}

func sameResult(t *testing.T, got, want results.Result) {
	t.Helper()
	if got.Code != want.Code || string(got.Body) != string(want.Body) || got.Request != want.Request {
		t.Fatalf("result %+v (body %s), want %+v (body %s)", got, got.Body, want, want.Body)
	}
}

func TestDoRunsOnceForConcurrentCallers(t *testing.T) {
	s := newStore(t, t.TempDir(), time.Hour)
	var builds atomic.Int32
	release := make(chan struct{})
	want := okResult("r/fn:1")

	const callers = 20
	var wg sync.WaitGroup
	got := make([]results.Result, callers)
	shared := make([]bool, callers)
	for i := range callers {
		wg.Go(func() {
			got[i], shared[i] = do(s, callID, func() results.Result {
				builds.Add(1)
				<-release
				return want
			})
		})
	}
	// Let every caller reach Do before the build finishes.
	waitRunning(t, s)
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()

	if n := builds.Load(); n != 1 {
		t.Fatalf("build ran %d times, want 1", n)
	}
	owners := 0
	for i := range callers {
		sameResult(t, got[i], want)
		if !shared[i] {
			owners++
		}
	}
	if owners != 1 {
		t.Fatalf("%d callers report shared=false, want exactly 1", owners)
	}
	if s.Running(callID) {
		t.Fatal("still running after every caller returned")
	}
}

func TestRunningDuringBuild(t *testing.T) {
	s := newStore(t, t.TempDir(), time.Hour)
	if s.Running(callID) {
		t.Fatal("running before any build")
	}
	inside := make(chan bool, 1)
	_, shared := do(s, callID, func() results.Result {
		inside <- s.Running(callID)
		return okResult("r/fn:1")
	})
	if shared {
		t.Fatal("first Do reports shared")
	}
	if !<-inside {
		t.Fatal("Running false while the build runs")
	}
	if s.Running(callID) {
		t.Fatal("Running true after the build")
	}
	if s.Running("other-id") {
		t.Fatal("Running true for an unrelated id")
	}
}

func TestResultSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	want := okResult("r/fn:2")
	first := newStore(t, dir, time.Hour)
	if _, shared := do(first, callID, func() results.Result { return want }); shared {
		t.Fatal("first Do reports shared")
	}

	second := newStore(t, dir, time.Hour)
	got, ok := second.Get(callID)
	if !ok {
		t.Fatal("result lost with a new Store on the same dir")
	}
	sameResult(t, got, want)
	if !second.Has(callID) {
		t.Fatal("Has false for a stored result")
	}
	res, shared := do(second, callID, func() results.Result {
		t.Error("build ran again after a restart")
		return results.Result{}
	})
	if !shared {
		t.Fatal("Do after restart reports shared=false")
	}
	sameResult(t, res, want)
}

func TestTTLExpiry(t *testing.T) {
	s := newStore(t, t.TempDir(), 50*time.Millisecond)
	var builds atomic.Int32
	build := func() results.Result {
		builds.Add(1)
		return okResult("r/fn:3")
	}
	do(s, callID, build)
	if _, ok := s.Get(callID); !ok {
		t.Fatal("fresh result missing")
	}
	if _, shared := do(s, callID, build); !shared || builds.Load() != 1 {
		t.Fatalf("second Do before expiry: shared=%v builds=%d", shared, builds.Load())
	}
	time.Sleep(80 * time.Millisecond)
	if _, ok := s.Get(callID); ok {
		t.Fatal("expired result still returned")
	}
	if s.Has(callID) {
		t.Fatal("Has true for an expired result")
	}
	if _, shared := do(s, callID, build); shared {
		t.Fatal("Do after expiry reports shared")
	}
	if n := builds.Load(); n != 2 {
		t.Fatalf("build ran %d times, want 2", n)
	}
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"8f14e45f-ceea-467f-a9e4-1f1e3b5c6d7a", true},
		{"abc", true},
		{"a.b_c-d", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{"../x", false},
		{"a/b", false},
		{".hidden", false},
		{"-x", false},
		{"a b", false},
		{"a\x00b", false},
		{strings.Repeat("a", 129), false},
		{strings.Repeat("a", 200), false},
	} {
		if got := results.ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestPruneRemovesOldFiles(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir, time.Hour)
	do(s, "old", func() results.Result { return okResult("r/old:1") })
	do(s, "new", func() results.Result { return okResult("r/new:1") })
	stale := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "old.json"), stale, stale); err != nil {
		t.Fatal(err)
	}
	// A leftover temp file from a crash while saving.
	tmp := filepath.Join(dir, ".tmp-123")
	if err := os.WriteFile(tmp, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, stale, stale); err != nil {
		t.Fatal(err)
	}

	s.Prune()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != "new.json" {
		t.Fatalf("after Prune: %v, want [new.json]", names)
	}
	if s.Has("old") {
		t.Fatal("pruned result still found")
	}
	if !s.Has("new") {
		t.Fatal("fresh result pruned")
	}
}

func TestHasAndGetMiss(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir, time.Hour)
	if s.Has(callID) {
		t.Fatal("Has true on an empty store")
	}
	if _, ok := s.Get(callID); ok {
		t.Fatal("Get hit on an empty store")
	}
	// A corrupt file is a miss, not a zero result.
	if err := os.WriteFile(filepath.Join(dir, callID+".json"), []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.Has(callID) {
		t.Fatal("Has true for a corrupt file")
	}
	do(s, callID, func() results.Result { return okResult("r/fn:4") })
	if !s.Has(callID) {
		t.Fatal("Has false after Do")
	}
}

func TestNewCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	newStore(t, dir, time.Hour)
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		t.Fatalf("store dir not created: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := results.New(filepath.Join(file, "sub"), time.Hour); err == nil {
		t.Fatal("New under a regular file succeeded")
	}
}

func TestDoWaiterLeavesWhenItsContextEnds(t *testing.T) {
	s := newStore(t, t.TempDir(), time.Hour)
	release := make(chan struct{})
	first := make(chan results.Result, 1)
	go func() {
		res, _ := do(s, callID, func() results.Result {
			<-release
			return okResult("r/fn:5")
		})
		first <- res
	}()
	waitRunning(t, s)

	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	var ranSecond atomic.Bool
	go func() {
		_, _, err := s.Do(ctx, callID, func() results.Result {
			ranSecond.Store(true)
			return okResult("r/other:1")
		})
		left <- err
	}()
	cancel()
	select {
	case err := <-left:
		if err != context.Canceled {
			t.Fatalf("waiter returned %v, want context.Canceled", err)
		}
	case <-time.After(testenv.HangGuard):
		t.Fatal("hang guard: waiter still waiting after its context ended")
	}
	if !s.Running(callID) {
		t.Fatal("the first build stopped with its waiter")
	}
	close(release)
	sameResult(t, <-first, okResult("r/fn:5"))
	if ranSecond.Load() {
		t.Fatal("the waiter ran a build of its own")
	}
	if res, shared := do(s, callID, nil); !shared {
		t.Fatal("a later delivery did not get the stored result")
	} else {
		sameResult(t, res, okResult("r/fn:5"))
	}
}

func waitRunning(t *testing.T, s *results.Store) {
	t.Helper()
	testenv.WaitFor(t, "a build to start", func() error {
		if !s.Running(callID) {
			return fmt.Errorf("none running")
		}
		return nil
	})
}

func TestPruneEveryExpiresResultsUntilStopped(t *testing.T) {
	dir := t.TempDir()
	const ttl = 200 * time.Millisecond
	s := newStore(t, dir, ttl)
	stop := s.PruneEvery(20 * time.Millisecond)
	do(s, callID, func() results.Result { return okResult("r/fn:6") })
	file := filepath.Join(dir, callID+".json")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("result not stored: %v", err)
	}
	// Nothing reads the result: only the timer can remove the file.
	testenv.WaitFor(t, fmt.Sprintf("the timer to remove %s (TTL %s)", file, ttl), func() error {
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})

	stop()
	stop() // safe twice
	stale := filepath.Join(dir, "stale.json")
	if err := os.WriteFile(stale, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * 20 * time.Millisecond) // ten intervals
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("a file was pruned after stop: %v", err)
	}
}
