package schedule

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// holder keeps the tickets of the builds that got a slot, by label.
type holder struct {
	mu      sync.Mutex
	order   []string
	tickets map[string]*Ticket
}

func newHolder() *holder { return &holder{tickets: map[string]*Ticket{}} }

func (h *holder) hold(label string, t *Ticket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.order = append(h.order, label)
	h.tickets[label] = t
}

func (h *holder) release(t *testing.T, label string) {
	t.Helper()
	h.mu.Lock()
	tk := h.tickets[label]
	h.mu.Unlock()
	if tk == nil {
		t.Fatalf("%s holds no slot", label)
	}
	tk.Release()
}

func (h *holder) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.order...)
}

func (h *holder) try(t *testing.T, s *Slots, tenant, label string) {
	t.Helper()
	tk, err := s.TryAcquire(tenant)
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	h.hold(label, tk)
}

// queue joins the queue as label and holds the slot once granted.
func (h *holder) queue(t *testing.T, s *Slots, tenant, label string) {
	t.Helper()
	before := s.Queued()
	tk, err := s.Join(tenant)
	if err != nil || !tk.Waiting() {
		t.Fatalf("%s: joined %v, %v", label, tk, err)
	}
	go func() {
		if tk.Wait(context.Background(), nil) == nil {
			h.hold(label, tk)
		}
	}()
	if s.Queued() != before+1 {
		t.Fatalf("%s: %d queued", label, s.Queued())
	}
}

func (h *holder) waitFor(t *testing.T, n int) {
	t.Helper()
	testenv.WaitFor(t, fmt.Sprintf("%d grants", n), func() error {
		if got := h.got(); len(got) < n {
			return fmt.Errorf("granted %v", got)
		}
		return nil
	})
}

// One tenant's burst does not starve another: waiting builds are served
// one tenant after another, each tenant's in arrival order.
func TestRoundRobinAcrossTenants(t *testing.T) {
	s := New(1, 10)
	h := newHolder()
	h.try(t, s, "acme", "acme-0")
	for _, l := range []string{"acme-1", "acme-2", "acme-3"} {
		h.queue(t, s, "acme", l)
	}
	h.queue(t, s, "bob", "bob-1")
	h.queue(t, s, "carol", "carol-1")
	want := []string{"acme-0", "acme-1", "bob-1", "carol-1", "acme-2", "acme-3"}
	for i := 1; i < len(want); i++ {
		h.release(t, want[i-1])
		h.waitFor(t, i+1)
	}
	if got := h.got(); len(got) != len(want) {
		t.Fatalf("grant order %v, want %v", got, want)
	}
	for i, l := range h.got() {
		if l != want[i] {
			t.Fatalf("grant order %v, want %v", h.got(), want)
		}
	}
}

func TestQueueBoundsAndPositions(t *testing.T) {
	s := New(1, 2)
	h := newHolder()
	h.try(t, s, "a", "a-0")
	places := make(chan int, 10)
	ctx, cancel := context.WithCancel(context.Background())
	first, err := s.Join("a")
	if err != nil {
		t.Fatal(err)
	}
	firstDone := make(chan error, 1)
	go func() { firstDone <- first.Wait(ctx, func(place, queued int) { places <- place }) }()
	if p := <-places; p != 1 {
		t.Fatalf("first waiter at place %d", p)
	}
	h.queue(t, s, "b", "b-1")
	// Full: the next one is refused at once, and nobody jumps the queue.
	if _, err := s.Join("c"); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third waiter: %v", err)
	}
	if !s.QueueFull() {
		t.Fatal("QueueFull false with 1 running and 2 waiting of 2")
	}
	if _, err := s.TryAcquire("c"); !errors.Is(err, ErrFull) {
		t.Fatalf("TryAcquire with a queue: %v", err)
	}
	// The first waiter leaves: the second is next, then gets the slot.
	cancel()
	if err := <-firstDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("left with %v", err)
	}
	first.Release()
	if s.Queued() != 1 {
		t.Fatalf("%d queued after one left", s.Queued())
	}
	h.release(t, "a-0")
	h.waitFor(t, 2)
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
	h := newHolder()
	h.try(t, s, "acme", "acme-1")
	h.try(t, s, "acme", "acme-2")
	if _, err := s.TryAcquire("bob"); !errors.Is(err, ErrTurn) {
		t.Fatalf("another tenant: %v", err)
	}
	h.queue(t, s, "bob", "bob-1")
	h.queue(t, s, "acme", "acme-3") // behind bob now
	h.release(t, "acme-1")
	time.Sleep(20 * time.Millisecond)
	if got := h.got(); len(got) != 2 {
		t.Fatalf("granted %v while acme still runs", got)
	}
	h.release(t, "acme-2")
	h.waitFor(t, 3)
	if h.got()[2] != "bob-1" {
		t.Fatalf("granted %v, want bob next", h.got())
	}
	h.release(t, "bob-1")
	h.waitFor(t, 4)
	// With the sandbox on, side by side.
	s.OneTenantAtATime(false)
	if _, err := s.TryAcquire("bob"); err != nil {
		t.Fatalf("sandboxed: %v", err)
	}
}

// A waiter granted just as it gives up hands the slot back, and Release
// twice frees one slot.
func TestGrantedThenGone(t *testing.T) {
	for range 200 {
		s := New(1, 1)
		held, err := s.TryAcquire("a")
		if err != nil {
			t.Fatal(err)
		}
		tk, err := s.Join("b")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- tk.Wait(ctx, nil) }()
		go cancel()
		held.Release()
		<-done
		tk.Release()
		tk.Release()
		held.Release()
		if s.Full() || s.Queued() != 0 {
			t.Fatal("a slot or a place outlived its ticket")
		}
	}
}
