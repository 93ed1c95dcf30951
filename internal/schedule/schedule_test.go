package schedule

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// grants records the order in which waiting builds got their slot.
type grants struct {
	mu    sync.Mutex
	order []string
	wg    sync.WaitGroup
}

func (g *grants) wait(t *testing.T, s *Slots, ctx context.Context, tenant, label string) {
	t.Helper()
	before := s.Queued()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := s.Acquire(ctx, tenant, nil); err != nil {
			return
		}
		g.mu.Lock()
		g.order = append(g.order, label)
		g.mu.Unlock()
	}()
	// In the queue before the next one arrives: arrival order is the point.
	deadline := time.Now().Add(5 * time.Second)
	for s.Queued() == before {
		if time.Now().After(deadline) {
			t.Fatalf("%s never queued", label)
		}
		time.Sleep(time.Millisecond)
	}
}

func (g *grants) got() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.order...)
}

func waitGranted(t *testing.T, g *grants, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(g.got()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("granted %v, want %d", g.got(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// One tenant's burst does not starve another: waiting builds are served
// one tenant after another, each tenant's in arrival order.
func TestRoundRobinAcrossTenants(t *testing.T) {
	s := New(1, 10)
	if err := s.TryAcquire("acme"); err != nil {
		t.Fatal(err)
	}
	g := &grants{}
	ctx := context.Background()
	for _, l := range []string{"acme-1", "acme-2", "acme-3"} {
		g.wait(t, s, ctx, "acme", l)
	}
	g.wait(t, s, ctx, "bob", "bob-1")
	g.wait(t, s, ctx, "carol", "carol-1")
	for i := 1; i <= 5; i++ {
		tenant := map[int]string{1: "acme", 2: "acme", 3: "bob", 4: "carol", 5: "acme"}[i]
		s.Release(tenant)
		waitGranted(t, g, i)
	}
	want := []string{"acme-1", "bob-1", "carol-1", "acme-2", "acme-3"}
	if got := g.got(); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] || got[4] != want[4] {
		t.Fatalf("grant order %v, want %v", got, want)
	}
}

func TestQueueBoundsAndPositions(t *testing.T) {
	s := New(1, 2)
	if err := s.TryAcquire("a"); err != nil {
		t.Fatal(err)
	}
	places := make(chan int, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- s.Acquire(ctx, "a", func(place, queued int) { places <- place }) }()
	if p := <-places; p != 1 {
		t.Fatalf("first waiter at place %d", p)
	}
	go func() { done <- s.Acquire(context.Background(), "b", nil) }()
	for s.Queued() != 2 {
		time.Sleep(time.Millisecond)
	}
	// Full: the next one is refused at once, and nobody jumps the queue.
	if err := s.Acquire(context.Background(), "c", nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third waiter: %v", err)
	}
	if !s.QueueFull() {
		t.Fatal("QueueFull false with 1 running and 2 waiting of 2")
	}
	if err := s.TryAcquire("c"); !errors.Is(err, ErrFull) {
		t.Fatalf("TryAcquire with a queue: %v", err)
	}
	// The first waiter leaves: the second is next, then gets the slot.
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("left with %v", err)
	}
	if s.Queued() != 1 {
		t.Fatalf("%d queued after one left", s.Queued())
	}
	s.Release("a")
	if err := <-done; err != nil {
		t.Fatalf("b: %v", err)
	}
	if s.Queued() != 0 || !s.Full() {
		t.Fatal("b does not hold the slot")
	}
}

// On an unsandboxed BuildKit tenants take turns: another tenant waits
// even with slots free, the same tenant does not, and when the running
// tenant is done the waiting one goes first.
func TestTenantsTakeTurns(t *testing.T) {
	s := New(0, 10)
	s.OneTenantAtATime(true)
	if err := s.TryAcquire("acme"); err != nil {
		t.Fatal(err)
	}
	if err := s.TryAcquire("acme"); err != nil {
		t.Fatalf("the same tenant: %v", err)
	}
	if err := s.TryAcquire("bob"); !errors.Is(err, ErrTurn) {
		t.Fatalf("another tenant: %v", err)
	}
	g := &grants{}
	g.wait(t, s, context.Background(), "bob", "bob-1")
	g.wait(t, s, context.Background(), "acme", "acme-3") // behind bob now
	s.Release("acme")
	time.Sleep(20 * time.Millisecond)
	if len(g.got()) != 0 {
		t.Fatalf("granted %v while acme still runs", g.got())
	}
	s.Release("acme")
	waitGranted(t, g, 1)
	if g.got()[0] != "bob-1" {
		t.Fatalf("granted %v, want bob first", g.got())
	}
	s.Release("bob")
	waitGranted(t, g, 2)
	// With the sandbox on, side by side.
	s.OneTenantAtATime(false)
	if err := s.TryAcquire("bob"); err != nil {
		t.Fatalf("sandboxed: %v", err)
	}
}

// A waiter granted just as its context ends gives the slot back.
func TestGrantedThenGone(t *testing.T) {
	for range 200 {
		s := New(1, 1)
		if err := s.TryAcquire("a"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- s.Acquire(ctx, "b", nil) }()
		for s.Queued() != 1 {
			time.Sleep(time.Microsecond)
		}
		go cancel()
		s.Release("a")
		if err := <-done; err != nil && s.Full() {
			t.Fatal("a waiter that left kept the slot")
		}
	}
}
