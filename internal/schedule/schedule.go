// Package schedule decides when a build may run: at most a fixed number at
// once; callers that can wait (streaming clients) wait in a bounded queue,
// served round-robin across tenants so that one tenant's burst cannot
// starve the others; and on a BuildKit without its process sandbox, builds
// of different tenants take turns. It knows nothing of HTTP.
package schedule

import (
	"context"
	"errors"
	"sync"
	"time"
)

var (
	// ErrFull means no build can start now and the caller may not wait
	// (or the queue is full).
	ErrFull = errors.New("every build slot is taken")
	// ErrQueueFull means the waiting room is full too.
	ErrQueueFull = errors.New("every build slot is taken and the queue is full")
	// ErrTurn means another tenant's builds run on an unsandboxed BuildKit.
	ErrTurn = errors.New("another tenant's build is running, and this builder's BuildKit has no process sandbox: builds of different tenants take turns")
)

// Slots admits builds.
type Slots struct {
	mu        sync.Mutex
	max       int // 0: unlimited
	maxQueued int
	total     int
	running   map[string]int
	exclusive bool

	// Waiting builds, per tenant in arrival order; ring is the tenants
	// with waiters in round-robin order, next the one whose turn it is.
	waiting map[string][]*waiter
	ring    []string
	next    int
	queued  int

	observe func(waited time.Duration)
}

// ObserveWaits has f told of every wait that ended in a slot.
func (s *Slots) ObserveWaits(f func(waited time.Duration)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observe = f
}

type waiter struct {
	tenant  string
	granted chan struct{}
	since   time.Time
}

// New allows max builds at once (0 or less: unlimited) and maxQueued
// waiting ones.
func New(max, maxQueued int) *Slots {
	return &Slots{max: max, maxQueued: maxQueued, running: map[string]int{}, waiting: map[string][]*waiter{}}
}

// OneTenantAtATime makes builds of different tenants take turns
// (exclusive), or lets them run side by side.
func (s *Slots) OneTenantAtATime(exclusive bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exclusive = exclusive
	s.dispatch()
}

// canRun says whether a build of tenant may start now, ignoring the queue.
func (s *Slots) canRun(tenant string) error {
	if s.max > 0 && s.total >= s.max {
		return ErrFull
	}
	if s.exclusive && s.total > s.running[tenant] {
		return ErrTurn
	}
	return nil
}

// TryAcquire takes a slot for a build of tenant if one is free and nobody
// waits for one: a caller that cannot wait does not jump the queue.
func (s *Slots) TryAcquire(tenant string) (*Ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued > 0 {
		return nil, ErrFull
	}
	if err := s.canRun(tenant); err != nil {
		return nil, err
	}
	s.take(tenant)
	return &Ticket{s: s, tenant: tenant}, nil
}

func (s *Slots) take(tenant string) {
	s.total++
	s.running[tenant]++
}

// release frees a slot taken for tenant, and gives it to the next waiter.
func (s *Slots) release(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.running[tenant]--; s.running[tenant] == 0 {
		delete(s.running, tenant)
	}
	s.dispatch()
}

// Ticket is a caller's claim on a slot: held already, or a place in the
// queue to Wait in. Release it when done, whatever happened.
type Ticket struct {
	s      *Slots
	tenant string
	w      *waiter // nil: the slot was free and is held
	done   bool
}

// Release frees the ticket's slot for the next waiter, or its place in
// the queue if it never got one. Calling it again does nothing.
func (t *Ticket) Release() {
	if t.done {
		return
	}
	t.done = true
	if t.w != nil && t.s.leave(t.w) {
		return
	}
	t.s.release(t.tenant)
}

// Join takes a slot for tenant when one is free and nobody waits, and
// otherwise a place in the queue; ErrQueueFull when the queue is full.
func (s *Slots) Join(tenant string) (*Ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued == 0 && s.canRun(tenant) == nil {
		s.take(tenant)
		return &Ticket{s: s, tenant: tenant}, nil
	}
	if s.queued >= s.maxQueued {
		return nil, ErrQueueFull
	}
	w := &waiter{tenant: tenant, granted: make(chan struct{}), since: time.Now()}
	if len(s.waiting[tenant]) == 0 {
		s.ring = append(s.ring, tenant)
	}
	s.waiting[tenant] = append(s.waiting[tenant], w)
	s.queued++
	return &Ticket{s: s, tenant: tenant, w: w}, nil
}

// Waiting says whether the ticket is a place in the queue, not a slot.
func (t *Ticket) Waiting() bool { return t.w != nil }

// Wait returns once the ticket holds a slot, calling position with its
// place in the queue (1: next) and the queue's length whenever they may
// have changed. When ctx ends first it returns ctx's error (Release then
// leaves the queue, or hands back a slot granted meanwhile).
func (t *Ticket) Wait(ctx context.Context, position func(place, queued int)) error {
	if t.w == nil {
		return nil
	}
	s, w := t.s, t.w
	// Places move when anyone is granted or leaves; a second is fine
	// grain for a person watching, and costs nothing.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := 0
	for {
		if place, queued := s.place(w); place > 0 && place != last && position != nil {
			last = place
			position(place, queued)
		}
		select {
		case <-w.granted:
			s.mu.Lock()
			observe := s.observe
			s.mu.Unlock()
			if observe != nil {
				observe(time.Since(w.since))
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// leave takes w out of the queue; false means it was granted already.
func (s *Slots) leave(w *waiter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.waiting[w.tenant]
	for i, x := range q {
		if x == w {
			s.waiting[w.tenant] = append(q[:i:i], q[i+1:]...)
			s.queued--
			if len(s.waiting[w.tenant]) == 0 {
				s.dropFromRing(w.tenant)
			}
			s.dispatch() // the head may have been blocked behind it
			return true
		}
	}
	return false
}

func (s *Slots) dropFromRing(tenant string) {
	delete(s.waiting, tenant)
	for i, t := range s.ring {
		if t == tenant {
			s.ring = append(s.ring[:i:i], s.ring[i+1:]...)
			if i < s.next {
				s.next--
			}
			break
		}
	}
	if s.next >= len(s.ring) {
		s.next = 0
	}
}

// dispatch grants free slots to waiters, one tenant after another. It
// stops at the first tenant whose turn it is but who cannot run yet (on
// an unsandboxed BuildKit, until the running tenant is done), so that no
// tenant is passed over.
func (s *Slots) dispatch() {
	for s.queued > 0 {
		tenant := s.ring[s.next]
		if s.canRun(tenant) != nil {
			return
		}
		q := s.waiting[tenant]
		w := q[0]
		s.waiting[tenant] = q[1:]
		s.queued--
		s.take(tenant)
		close(w.granted)
		if len(s.waiting[tenant]) == 0 {
			s.dropFromRing(tenant)
		} else {
			s.next = (s.next + 1) % len(s.ring)
		}
	}
}

// place is w's position in the order dispatch would grant slots if no one
// else arrived (1 is next), and how many wait; 0 once w is granted.
func (s *Slots) place(w *waiter) (place, queued int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for round := 0; n < s.queued; round++ {
		for i := range s.ring {
			tenant := s.ring[(s.next+i)%len(s.ring)]
			q := s.waiting[tenant]
			if round >= len(q) {
				continue
			}
			n++
			if q[round] == w {
				return n, s.queued
			}
		}
	}
	return 0, s.queued
}

// Full reports whether no build could start now; readiness turns false.
func (s *Slots) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max > 0 && s.total >= s.max
}

// QueueFull reports whether a caller that can wait would be refused.
func (s *Slots) QueueFull() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max > 0 && s.total >= s.max && s.queued >= s.maxQueued
}

// Queued is how many builds wait.
func (s *Slots) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

// Max is the limit, 0 when unlimited.
func (s *Slots) Max() int { return s.max }
