package budget

import (
	"sync"
	"testing"
)

// Concurrent takers never get more than Max between them, and what they
// give back can be taken again.
func TestTakeNeverExceedsMax(t *testing.T) {
	b := &Bytes{Max: 100}
	var wg sync.WaitGroup
	var mu sync.Mutex
	taken := 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.Take(7) {
				mu.Lock()
				taken++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if taken != 14 || b.Used() != 98 {
		t.Fatalf("%d takes of 7 succeeded, %d used; want 14 and 98", taken, b.Used())
	}
	if b.Take(3) {
		t.Error("took 3 with 2 left")
	}
	b.Give(7)
	if !b.Take(9) || b.Used() != 100 {
		t.Errorf("after giving 7 back: used %d, want 9 taken and 100 used", b.Used())
	}
}
