// Package budget bounds an amount that concurrent requests take from and
// give back to, without a lock: the bytes of bodies held in memory, or
// held before their signature is checked.
package budget

import "sync/atomic"

// Bytes is a budget of Max bytes; the zero value allows none.
type Bytes struct {
	Max  int64
	used atomic.Int64
}

// Take takes n if it fits beside what is taken already, and says whether
// it did: the amount taken never goes over Max, not even for a moment.
func (b *Bytes) Take(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.Max {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// Give gives back n taken before.
func (b *Bytes) Give(n int64) { b.used.Add(-n) }

// Used is how much is taken now.
func (b *Bytes) Used() int64 { return b.used.Load() }
