// Package daemon starts, watches and stops the local daemons of the stack
// (cmd/fnb-stack) and of the tests (internal/testenv): each in its own
// session and process group, logging to a file, and recorded with its start
// time so that a reused PID is never signalled. It also finds tools, cleans
// mounts, and holds the recipes both use: the registry, buildkitd (rootless
// or root) and the busybox base image.
package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec is how to start one daemon.
type Spec struct {
	Name string
	Args []string
	Env  []string
	Dir  string
	// Cred runs the process as another user.
	Cred *syscall.Credential
	// Cloneflags puts the process in new namespaces (CLONE_NEWUTS).
	Cloneflags uintptr
	// LogPath receives stdout and stderr, appended across starts.
	LogPath string
	// PIDFile, when set, receives the Record and the process outlives its
	// caller, who finds it again by ReadRecord. Without it the process is
	// killed when the caller dies (a test binary that never ran its cleanups).
	PIDFile string
	// Settings sums up what the daemon was started with that a caller may
	// change; it is kept in the Record.
	Settings string
	// Prepare writes configuration and clears stale runtime files just
	// before the start.
	Prepare func() error
	// Ready returns nil once the daemon serves; logFrom is the log's size
	// when this start began (0 when checking a daemon found running).
	Ready func(ctx context.Context, logFrom int64) error
	// ReadyTimeout bounds the wait (default 60 s).
	ReadyTimeout time.Duration
}

// Process is a daemon this process started.
type Process struct {
	Record
	LogPath string
	pidFile string
	done    chan struct{}
	err     error // valid once done is closed
}

// Start runs s.Prepare, starts the daemon in its own session and waits
// until it is ready. A daemon that exits or is not ready in time is
// stopped, and the error carries the end of its log.
func Start(ctx context.Context, s Spec) (*Process, error) {
	if s.Prepare != nil {
		if err := s.Prepare(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(s.LogPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fi, err := logf.Stat()
	if err != nil {
		return nil, err
	}
	from := fi.Size()
	fmt.Fprintf(logf, "==== %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(s.Args, " "))
	cmd := exec.Command(s.Args[0], s.Args[1:]...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = s.Env, s.Dir, logf, logf
	// Setsid: its own session and process group, so the whole tree can be
	// signalled as one, and no controlling terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: s.Cred, Cloneflags: s.Cloneflags}
	start := cmd.Start
	if s.PIDFile == "" {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		start = func() (err error) { onLastingThread(func() { err = cmd.Start() }); return err }
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", s.Name, s.Args[0], err)
	}
	// Not reaped before Wait, so its stat is there even if it exited.
	st, err := Stat(cmd.Process.Pid)
	p := &Process{Record: Record{PID: cmd.Process.Pid, Start: st.Start, Args: s.Args, Settings: s.Settings},
		LogPath: s.LogPath, pidFile: s.PIDFile, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	if err == nil && s.PIDFile != "" {
		err = p.Record.write(s.PIDFile)
	}
	if err == nil {
		err = p.waitReady(ctx, s, from)
	}
	if err != nil {
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("%s: %w\ncommand: %s\n--- %s (tail) ---\n%s", s.Name, err, strings.Join(s.Args, " "), s.LogPath, Tail(s.LogPath, 4000))
	}
	return p, nil
}

// The kernel sends Pdeathsig when the thread that forked exits, and Go ends
// threads long before the process does (a goroutine that locked its thread
// to enter a network namespace and returned). Children that must die with
// this process are forked from one thread that lasts as long as it.
var (
	lastingOnce   sync.Once
	lastingThread = make(chan func())
)

func onLastingThread(f func()) {
	lastingOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread never ends
			for f := range lastingThread {
				f()
			}
		}()
	})
	done := make(chan struct{})
	lastingThread <- func() { f(); close(done) }
	<-done
}

func (p *Process) waitReady(ctx context.Context, s Spec, from int64) error {
	timeout := s.ReadyTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	var exited error
	err := Poll(ctx, timeout, 100*time.Millisecond, func() error {
		if p.Exited() {
			// Nothing to wait for any more: Poll ends, and this is the error.
			exited = fmt.Errorf("exited while starting: %v", p.err)
			return nil
		}
		if s.Ready == nil {
			return nil
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return s.Ready(cctx, from)
	})
	if exited != nil {
		return exited
	}
	return err
}

// Poll calls check every interval until it returns nil; once timeout has
// passed it fails with check's last error ("not ready after"), and at once
// when ctx ends.
func Poll(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Exited reports whether the process itself has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process exited; nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Stop ends the process group (see Record.Stop), waits for the process to
// be reaped and removes its PID file. It reports whether SIGTERM was enough.
func (p *Process) Stop(grace time.Duration) bool {
	graceful := p.Record.Stop(grace)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
	}
	if p.pidFile != "" {
		os.Remove(p.pidFile)
	}
	return graceful
}

// Kill SIGKILLs the process group at once, as a crash would.
func (p *Process) Kill() { p.Stop(0) }

// Record is what a PID file holds: the process and its start time.
type Record struct {
	PID      int      `json:"pid"`
	Start    uint64   `json:"start"` // field 22 of /proc/PID/stat
	Args     []string `json:"args"`
	Settings string   `json:"settings,omitempty"`
}

func (r Record) write(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return WriteFileAtomic(path, append(b, '\n'), 0o644)
}

// ReadRecord reads a PID file.
func ReadRecord(path string) (Record, bool) {
	var r Record
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &r) != nil || r.PID <= 1 {
		return r, false
	}
	return r, true
}

// Alive reports whether the recorded process itself still runs.
func (r Record) Alive() bool {
	st, err := Stat(r.PID)
	return err == nil && st.Start == r.Start && st.live()
}

// Ours reports whether signalling the record's process group reaches only
// what was started: the leader is the recorded process, or the leader is
// gone and members of its group remain (a PID is not reused while a
// process group of that ID exists).
func (r Record) Ours() bool {
	if r.Alive() {
		return true
	}
	if st, err := Stat(r.PID); err == nil && st.Start != r.Start {
		return false // the PID now belongs to someone else
	}
	return len(GroupMembers(r.PID)) > 0
}

// Stop ends the process group the record leads: SIGTERM and up to grace for
// every member to exit, then SIGKILL until none is left. A group that is no
// longer ours is left alone. It reports whether SIGTERM was enough.
func (r Record) Stop(grace time.Duration) bool {
	signal := func(sig syscall.Signal) {
		if r.Ours() && syscall.Kill(-r.PID, sig) != nil && r.Alive() {
			_ = syscall.Kill(r.PID, sig)
		}
	}
	if grace > 0 {
		signal(syscall.SIGTERM)
		for deadline := time.Now().Add(grace); r.Ours() && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		if !r.Ours() {
			return true
		}
	}
	for i := 0; i < 400 && r.Ours(); i++ {
		signal(syscall.SIGKILL)
		time.Sleep(25 * time.Millisecond)
	}
	return false
}

// WriteFileAtomic writes through a rename, so a reader never sees half a file.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
