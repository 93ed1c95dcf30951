package testenv

import (
	"testing"
	"time"
)

// HangGuard is how long a test waits for something that must happen
// before it calls the wait a hang and fails. It is no speed claim (speed
// goals are benchmarks, never timed assertions): it is long because the
// machines that run these tests are shared and loaded, and short enough
// that a hang fails with its own message well before go test's -timeout.
const HangGuard = 2 * time.Minute

// WaitFor polls cond until it returns nil, and fails the test naming what
// it waited for and cond's last error when that takes longer than
// HangGuard.
func WaitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(HangGuard)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s (the hang guard) for %s: %v", HangGuard, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
