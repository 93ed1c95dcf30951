package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// component is one daemon the stack runs: started with internal/daemon in
// its own session (it outlives fnb-stack and its whole tree is signalled as
// one process group), logging to logs/NAME.log, recorded in pids/NAME.pid.
type component struct {
	daemon.Spec
	// What the component is, for messages ("the OpenFaaS gateway").
	What string
	// Listens are addresses that must be free before it starts.
	Listens []string
}

// running returns the daemon's record when its process runs.
func (s *Stack) running(name string) (daemon.Record, bool) {
	r, ok := daemon.ReadRecord(s.pidPath(name))
	return r, ok && r.Alive()
}

// start starts c unless it already runs and answers with the same
// settings, and waits until it is ready.
func (s *Stack) start(ctx context.Context, c component) error {
	if r, ok := s.running(c.Name); ok {
		switch {
		case r.Settings != c.Settings:
			s.logf("%-16s runs (PID %d) with other settings (%s, want %s); restarting it", c.Name, r.PID, orNone(r.Settings), orNone(c.Settings))
		case c.Ready == nil:
			s.logf("%-16s already running (PID %d)", c.Name, r.PID)
			return nil
		default:
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := retryUntil(cctx, func() error { return c.Ready(cctx, 0) })
			cancel()
			if err == nil {
				s.logf("%-16s already running (PID %d)", c.Name, r.PID)
				return nil
			}
			s.logf("%-16s RUNS (PID %d) BUT DOES NOT ANSWER: %v; restarting it (log: %s)", c.Name, r.PID, err, s.logPath(c.Name))
		}
	}
	// What runs, or a stale group (leader dead, children alive), goes first.
	s.stop(c.Name, 15*time.Second)
	for _, addr := range c.Listens {
		if err := checkFree(addr); err != nil {
			return fmt.Errorf("%s (%s) cannot start: %v\n  something else listens there: stop it, or run `make down` if it is an older stack", c.Name, c.What, err)
		}
	}
	c.LogPath, c.PIDFile = s.logPath(c.Name), s.pidPath(c.Name)
	if c.Dir == "" {
		c.Dir = s.Dir
	}
	t0 := time.Now()
	p, err := daemon.Start(ctx, c.Spec)
	if err != nil {
		return fmt.Errorf("%s, %w", c.What, err)
	}
	s.logf("%-16s started (PID %d, ready in %.1fs)", c.Name, p.PID, time.Since(t0).Seconds())
	return nil
}

// stop stops a daemon by its PID file: SIGTERM to its process group, then
// SIGKILL after grace; a record that is no longer ours is only removed.
func (s *Stack) stop(name string, grace time.Duration) {
	if r, ok := daemon.ReadRecord(s.pidPath(name)); ok && r.Ours() {
		t0 := time.Now()
		how := "stopped"
		if !r.Stop(grace) {
			how = fmt.Sprintf("KILLED (still running %s after SIGTERM)", grace)
		}
		s.logf("%-16s %s (PID %d, %.1fs)", name, how, r.PID, time.Since(t0).Seconds())
	}
	os.Remove(s.pidPath(name))
}

func orNone(settings string) string {
	if settings == "" {
		return "none recorded"
	}
	return settings
}

// checkFree fails when something accepts connections on addr, or when addr
// cannot be bound.
func checkFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s is taken: %v", addr, err)
	}
	l.Close()
	return nil
}

// retryUntil calls f until it succeeds or ctx ends.
func retryUntil(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
