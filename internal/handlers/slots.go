package handlers

import (
	"net/http"
	"sync"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/results"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// Slots bounds concurrent builds without queueing: a full builder answers
// 429 at once, because no client waits or retries (and the Pro
// queue-worker retries a 429 by itself). On a BuildKit without its process
// sandbox, where one build's steps can see another's, it also keeps
// builds of different tenants from running at the same time.
type Slots struct {
	mu        sync.Mutex
	max       int // 0: unlimited
	running   map[string]int
	total     int
	exclusive bool
}

// NewSlots allows max concurrent builds; 0 or less means unlimited.
func NewSlots(max int) *Slots {
	return &Slots{max: max, running: map[string]int{}}
}

// OneTenantAtATime makes builds of different tenants wait for each other
// (exclusive), or lets them run side by side.
func (s *Slots) OneTenantAtATime(exclusive bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exclusive = exclusive
}

// TryAcquire takes a slot for a build of tenant if one is free.
func (s *Slots) TryAcquire(tenant string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.total >= s.max {
		return false
	}
	if s.exclusive && s.total > s.running[tenant] {
		return false // another tenant's build is running
	}
	s.total++
	s.running[tenant]++
	return true
}

// Release frees a slot TryAcquire took for tenant.
func (s *Slots) Release(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.running[tenant]--; s.running[tenant] == 0 {
		delete(s.running, tenant)
	}
}

// Full reports whether no slot is free for anyone; readiness turns false
// then.
func (s *Slots) Full() bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max > 0 && s.total >= s.max
}

// Max is the limit, 0 when unlimited.
func (s *Slots) Max() int {
	if s == nil {
		return 0
	}
	return s.max
}

// runHoldingSlot runs a build in a slot, or answers 429 when none is free.
// Every build goes through here, a redelivery's included.
func (o BuildOptions) runHoldingSlot(w http.ResponseWriter, r *http.Request, spooled *signature.Spooled, t tenant.Tenant, start time.Time) results.Result {
	if !o.Slots.TryAcquire(t.Name) {
		return tooMany(w, o.Slots)
	}
	defer o.Slots.Release(t.Name)
	return o.run(w, r, spooled, t, start)
}
