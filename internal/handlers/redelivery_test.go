package handlers_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// gauge records how many builds run at once, and the most ever seen.
type gauge struct{ now, peak atomic.Int32 }

func (g *gauge) around(run func(context.Context, buildkit.Build, func([]string)) error) func(context.Context, buildkit.Build, func([]string)) error {
	return func(ctx context.Context, b buildkit.Build, logf func([]string)) error {
		n := g.now.Add(1)
		defer g.now.Add(-1)
		for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
		}
		return run(ctx, b, logf)
	}
}

func withSlots(n int) option {
	return func(o *handlers.BuildOptions) { o.Slots = schedule.New(n, 0) }
}

// spooled counts request bodies in the spool dir.
func (f *fixture) spooled() int {
	f.t.Helper()
	entries, err := os.ReadDir(f.opts.SpoolDir)
	if err != nil {
		f.t.Fatal(err)
	}
	return len(entries)
}

func (f *fixture) waitSpooled(want int) {
	f.t.Helper()
	waitValue(f.t, "spooled bodies", want, f.spooled)
}

// waitEmpty waits for a directory to empty: the handler removes its spool
// file after the reply has gone out.
func waitEmpty(t *testing.T, dir string) {
	t.Helper()
	testenv.WaitFor(t, dir+" to empty", func() error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			return fmt.Errorf("%d files left, first %s", len(entries), entries[0].Name())
		}
		return nil
	})
}

// waitValue waits for get to return want.
func waitValue[T comparable](t *testing.T, what string, want T, get func() T) {
	t.Helper()
	testenv.WaitFor(t, fmt.Sprintf("%s to be %v", what, want), func() error {
		if got := get(); got != want {
			return fmt.Errorf("%s is %v", what, got)
		}
		return nil
	})
}

func (f *fixture) bytesReceived() float64 {
	var m dto.Metric
	if err := f.opts.Metrics.BytesReceived.Write(&m); err != nil {
		f.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// callRequest is a signed delivery of body under call id, cancelled with ctx.
func (f *fixture) callRequest(ctx context.Context, body []byte, id string) *http.Request {
	req := f.request(ctx, http.MethodPost, body, "")
	req.Header.Set("X-Call-Id", id)
	return req
}

// TestRedeliveryBuildsOnlyInASlot: a redelivery arrives while its first
// delivery builds, so it does not queue for a slot; then the first
// delivery's client leaves (a result that is not kept) and another build
// takes the only slot. When the redelivery's body is in, it is the one to
// build for its call id, and it must get 429, not a second build.
func TestRedeliveryBuildsOnlyInASlot(t *testing.T) {
	b := newBlocking()
	var g gauge
	f := newFixture(t, g.around(b.run), withResults(t), withSlots(1))
	release := sync.OnceFunc(func() { close(b.release) })
	t.Cleanup(release)
	body := makeTar(t)

	ctx1, leave1 := context.WithCancel(context.Background())
	defer leave1()
	first := f.send(f.callRequest(ctx1, body, asyncCallID))
	b.waitStarted(t)

	// The redelivery's headers are in, its body is not.
	pr, pw := io.Pipe()
	// A failed test must not leave the server waiting for this body.
	t.Cleanup(func() { pw.CloseWithError(io.ErrUnexpectedEOF) })
	redelivery := f.callRequest(context.Background(), nil, asyncCallID)
	redelivery.Body, redelivery.ContentLength = pr, int64(len(body))
	redelivery.Header.Set("X-Build-Signature", testenv.Sign([]byte(payloadText), body))
	second := f.send(redelivery)
	f.waitSpooled(2)

	leave1()
	if err := <-b.ctxDone; err == nil {
		t.Fatal("first build not cancelled")
	}
	if r := <-first; r.err == nil {
		t.Fatalf("the first delivery's client left, yet got %d", r.res.StatusCode)
	}
	// Its handler has returned once its body is gone: only the
	// redelivery's is left.
	f.waitSpooled(1)

	other := f.send(f.request(nil, http.MethodPost, makeTar(t), ""))
	b.waitStarted(t)

	go func() {
		_, _ = pw.Write(body)
		pw.Close()
	}()
	r2 := await(t, second)
	checkErrorReply(t, r2.res, r2.data, http.StatusTooManyRequests)
	if r2.res.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	if peak := g.peak.Load(); peak != 1 {
		t.Fatalf("%d builds ran at once with max_inflight 1", peak)
	}

	release()
	if r := await(t, other); r.res.StatusCode != http.StatusOK {
		t.Fatalf("other build: %d %s", r.res.StatusCode, r.data)
	}
	// The 429 was not kept: the next delivery builds.
	if r := await(t, f.send(f.withCallID(body, "", asyncCallID))); r.res.StatusCode != http.StatusOK || r.res.Header.Get("X-Fnbuilder-Replayed") != "" {
		t.Fatalf("next delivery: %d replayed=%q %s", r.res.StatusCode, r.res.Header.Get("X-Fnbuilder-Replayed"), r.data)
	}
	if n := f.runner.calls.Load(); n != 3 {
		t.Fatalf("runner called %d times, want 3 (first, other, last delivery)", n)
	}
	waitEmpty(t, f.opts.SpoolDir)
}

// TestWaitingRedeliveryLeavesWithItsClient: a redelivery waiting for its
// first delivery stops waiting when its client goes, and its spooled body
// is removed then, while the first build still runs.
func TestWaitingRedeliveryLeavesWithItsClient(t *testing.T) {
	b := newBlocking()
	f := newFixture(t, b.run, withResults(t), withSlots(1))
	release := sync.OnceFunc(func() { close(b.release) })
	t.Cleanup(release)
	body := makeTar(t)

	first := f.send(f.withCallID(body, "", asyncCallID))
	b.waitStarted(t)
	ctx, leave := context.WithCancel(context.Background())
	defer leave()
	second := f.send(f.callRequest(ctx, body, asyncCallID))
	// Both bodies are in: the redelivery waits on the first build.
	waitValue(t, "bytes received (both bodies)", float64(2*len(body)), f.bytesReceived)
	if got := f.spooled(); got != 2 {
		t.Fatalf("%d spooled bodies, want 2", got)
	}

	leave()
	if r := <-second; r.err == nil {
		t.Fatalf("the redelivery's client left, yet got %d", r.res.StatusCode)
	}
	f.waitSpooled(1)
	if f.ready() != http.StatusServiceUnavailable {
		t.Fatal("the first build ended with its redelivery: its slot is free")
	}

	release()
	if r := await(t, first); r.res.StatusCode != http.StatusOK {
		t.Fatalf("first delivery: %d %s", r.res.StatusCode, r.data)
	}
	if n := f.runner.calls.Load(); n != 1 {
		t.Fatalf("runner called %d times, want 1", n)
	}
	waitEmpty(t, f.opts.SpoolDir)
}

// TestDeliveriesNeverExceedMaxInflight sends first deliveries,
// redeliveries and plain builds at once, some of whose clients leave
// mid-build, and checks that no more than max_inflight builds ever ran
// together and that every body was removed.
func TestDeliveriesNeverExceedMaxInflight(t *testing.T) {
	const maxInflight = 2
	var g gauge
	f := newFixture(t, g.around(func(ctx context.Context, _ buildkit.Build, logf func([]string)) error {
		logf([]string{"l: building"})
		select {
		case <-time.After(time.Duration(rand.IntN(20)) * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}), withResults(t), withSlots(maxInflight))
	body := makeTar(t)

	var wg sync.WaitGroup
	var codes sync.Map
	for i := range 48 {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if i%5 == 0 {
				// This client leaves early: mid-upload, waiting or building.
				time.AfterFunc(time.Duration(rand.IntN(15))*time.Millisecond, cancel)
			}
			req := f.request(ctx, http.MethodPost, body, "")
			if i%3 != 0 {
				req.Header.Set("X-Call-Id", fmt.Sprintf("call-%d", i%4))
			}
			res, err := f.srv.Client().Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			n, _ := codes.LoadOrStore(res.StatusCode, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		})
	}
	wg.Wait()

	if peak := g.peak.Load(); peak > maxInflight || peak == 0 {
		t.Fatalf("%d builds ran at once, max_inflight is %d", peak, maxInflight)
	}
	codes.Range(func(code, n any) bool {
		switch code {
		case http.StatusOK, http.StatusTooManyRequests, http.StatusInternalServerError:
		default:
			t.Errorf("%d replies with status %d", n.(*atomic.Int32).Load(), code)
		}
		return true
	})
	waitEmpty(t, f.opts.SpoolDir)
	f.waitReady(http.StatusOK)
}
