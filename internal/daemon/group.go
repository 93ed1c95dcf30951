package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Group is a set of daemons that outlive the program that started them
// (the local stack's), kept in one directory: pids/NAME.pid holds each
// Record and logs/NAME.log its output. Start is idempotent and Stop goes by
// the record, so any later run of the program finds them again.
type Group struct {
	Dir string
	// Logf prints one progress line.
	Logf func(format string, args ...any)
}

// Member is one daemon of a group.
type Member struct {
	Spec
	// What the daemon is, for messages ("the OpenFaaS gateway").
	What string
	// Listens are addresses that must be free before it starts.
	Listens []string
}

func (g Group) PIDPath(name string) string { return filepath.Join(g.Dir, "pids", name+".pid") }
func (g Group) LogPath(name string) string { return filepath.Join(g.Dir, "logs", name+".log") }

// Lock serialises the commands that change the group (start, stop): it
// waits, saying so, while another holds the directory's .lock.
func (g Group) Lock() (unlock func(), err error) {
	if err := os.MkdirAll(g.Dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(g.Dir, ".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		g.Logf("waiting for another command on %s (it holds %s)", g.Dir, path)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}

// Running returns the daemon's record when its process runs.
func (g Group) Running(name string) (Record, bool) {
	r, ok := ReadRecord(g.PIDPath(name))
	return r, ok && r.Alive()
}

// Start starts m unless it already runs and answers with the same
// settings, and waits until it is ready.
func (g Group) Start(ctx context.Context, m Member) error {
	if r, ok := g.Running(m.Name); ok {
		switch {
		case r.Settings != m.Settings:
			g.Logf("%-16s runs (PID %d) with other settings (%s, want %s); restarting it", m.Name, r.PID, orNone(r.Settings), orNone(m.Settings))
		case m.Ready == nil:
			g.Logf("%-16s already running (PID %d)", m.Name, r.PID)
			return nil
		default:
			err := m.answers(ctx)
			if err == nil {
				g.Logf("%-16s already running (PID %d)", m.Name, r.PID)
				return nil
			}
			g.Logf("%-16s RUNS (PID %d) BUT DOES NOT ANSWER: %v; restarting it (log: %s)", m.Name, r.PID, err, g.LogPath(m.Name))
		}
	}
	// What runs, or a stale group (leader dead, children alive), goes first.
	g.Stop(m.Name, 15*time.Second)
	for _, addr := range m.Listens {
		if err := CheckFree(addr); err != nil {
			return fmt.Errorf("%s (%s) cannot start: %v\n  something else listens there: stop it, or run `make down` if it is an older stack", m.Name, m.What, err)
		}
	}
	m.LogPath, m.PIDFile = g.LogPath(m.Name), g.PIDPath(m.Name)
	if m.Dir == "" {
		m.Dir = g.Dir
	}
	t0 := time.Now()
	p, err := Start(ctx, m.Spec)
	if err != nil {
		return fmt.Errorf("%s, %w", m.What, err)
	}
	g.Logf("%-16s started (PID %d, ready in %.1fs)", m.Name, p.PID, time.Since(t0).Seconds())
	return nil
}

// answers runs the readiness check of a daemon found running, for up to 10 s.
func (m Member) answers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return RetryUntil(ctx, func() error { return m.Ready(ctx, 0) })
}

// Check probes one member: its process by PID file, then its endpoint.
func (g Group) Check(ctx context.Context, m Member) error {
	r, ok := g.Running(m.Name)
	if !ok {
		return fmt.Errorf("%s is not running (no live process in %s)", m.What, g.PIDPath(m.Name))
	}
	if m.Ready != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := m.Ready(cctx, 0); err != nil {
			return fmt.Errorf("%s runs (PID %d) but does not answer: %v", m.What, r.PID, err)
		}
	}
	return nil
}

// Stop stops a daemon by its PID file: SIGTERM to its process group, then
// SIGKILL after grace; a record that is no longer ours is only removed.
func (g Group) Stop(name string, grace time.Duration) {
	if r, ok := ReadRecord(g.PIDPath(name)); ok && r.Ours() {
		t0 := time.Now()
		how := "stopped"
		if !r.Stop(grace) {
			how = fmt.Sprintf("KILLED (still running %s after SIGTERM)", grace)
		}
		g.Logf("%-16s %s (PID %d, %.1fs)", name, how, r.PID, time.Since(t0).Seconds())
	}
	os.Remove(g.PIDPath(name))
}

// Recorded names every daemon with a PID file, running or not.
func (g Group) Recorded() []string {
	ents, _ := os.ReadDir(filepath.Join(g.Dir, "pids"))
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".pid"); ok {
			out = append(out, name)
		}
	}
	return out
}

// Records are the group's PID records, running or not.
func (g Group) Records() map[string]Record {
	out := map[string]Record{}
	for _, name := range g.Recorded() {
		if r, ok := ReadRecord(g.PIDPath(name)); ok {
			out[name] = r
		}
	}
	return out
}

// Live lists the group's daemons still running, by PID file.
func (g Group) Live() map[string]int {
	out := map[string]int{}
	for name, r := range g.Records() {
		if r.Ours() {
			out[name] = r.PID
		}
	}
	return out
}

// Stray is a live process outside any recorded group.
type Stray struct {
	PID     int
	Cmdline string
}

// Strays are live processes, other than this one, with an argument that is
// the group's directory or lies inside it (containerd's shims name their
// socket), except those skip lets go (the program's own commands).
func (g Group) Strays(skip func(argv []string) bool) []Stray {
	var out []Stray
	for _, pid := range PIDs() {
		if pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		if st, err := Stat(pid); err != nil || !st.live() {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if skip != nil && skip(argv) {
			continue
		}
		for _, arg := range argv {
			if v, ok := strings.CutPrefix(arg, "--"); ok {
				if _, after, found := strings.Cut(v, "="); found {
					arg = after
				}
			}
			if arg == g.Dir || strings.HasPrefix(arg, g.Dir+"/") || strings.Contains(arg, "unix://"+g.Dir+"/") {
				out = append(out, Stray{pid, strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))})
				break
			}
		}
	}
	return out
}

func orNone(settings string) string {
	if settings == "" {
		return "none recorded"
	}
	return settings
}

// CheckFree fails when something accepts connections on addr, or when addr
// cannot be bound.
func CheckFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s is taken: %v", addr, err)
	}
	l.Close()
	return nil
}

// RetryUntil calls f until it succeeds or ctx ends.
func RetryUntil(ctx context.Context, f func() error) error {
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

// DialReady is a readiness check that wants network ("tcp", "unix") to
// accept a connection at addr.
func DialReady(network, addr string) func(ctx context.Context, _ int64) error {
	return func(ctx context.Context, _ int64) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}
