package handlers

import (
	"net/http"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/results"
	"github.com/fnbuilder/fnbuilder/internal/signature"
)

// Slots bounds concurrent builds without queueing: a full builder answers
// 429 at once, because no client waits or retries (and the Pro
// queue-worker retries a 429 by itself).
type Slots struct {
	ch chan struct{}
}

// NewSlots allows max concurrent builds; 0 or less means unlimited (nil).
func NewSlots(max int) *Slots {
	if max <= 0 {
		return nil
	}
	return &Slots{ch: make(chan struct{}, max)}
}

// TryAcquire takes a slot if one is free.
func (s *Slots) TryAcquire() bool {
	if s == nil {
		return true
	}
	select {
	case s.ch <- struct{}{}:
		return true
	default:
		return false
	}
}

// Release frees a slot.
func (s *Slots) Release() {
	if s != nil {
		<-s.ch
	}
}

// Full reports whether no slot is free; readiness turns false then.
func (s *Slots) Full() bool { return s != nil && len(s.ch) == cap(s.ch) }

// Max is the limit, 0 when unlimited.
func (s *Slots) Max() int {
	if s == nil {
		return 0
	}
	return cap(s.ch)
}

// runHoldingSlot runs a build in a slot, or answers 429 when none is free.
// Every build goes through here, a redelivery's included.
func (o BuildOptions) runHoldingSlot(w http.ResponseWriter, r *http.Request, spooled *signature.Spooled, start time.Time) results.Result {
	if !o.Slots.TryAcquire() {
		return tooMany(w, o.Slots)
	}
	defer o.Slots.Release()
	return o.run(w, r, spooled, start)
}
