package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is one process the stack runs. It is started in its own session
// (so it outlives fnb-stack and its whole tree can be signalled as one
// process group), with stdout and stderr appended to logs/NAME.log, and
// recorded in pids/NAME.pid.
type daemon struct {
	Name string
	// What the component is, for messages ("the OpenFaaS gateway").
	What string
	Args []string
	Env  []string
	Dir  string
	// Cred runs the process as another user.
	Cred *syscall.Credential
	// Cloneflags puts the process in new namespaces (CLONE_NEWUTS).
	Cloneflags uintptr
	// Listens are addresses that must be free before it starts.
	Listens []string
	// Ready returns nil once the daemon serves. logFrom is the log size
	// when this start began.
	Ready func(ctx context.Context, logFrom int64) error
	// ReadyTimeout bounds the wait (default 60 s).
	ReadyTimeout time.Duration
	// Prepare writes configuration and clears stale runtime files; it
	// runs only when the daemon is about to start, never beside a live one.
	Prepare func() error
	// Settings sums up what the daemon was started with that `up` may
	// change (the queue-workers' ack_wait). It is kept in the PID file; a
	// running daemon whose settings differ is restarted.
	Settings string
}

// pidRecord is a PID file: the process and its start time, so that a PID
// reused by an unrelated process is never signalled.
type pidRecord struct {
	PID      int      `json:"pid"`
	Start    uint64   `json:"start"` // field 22 of /proc/PID/stat
	Args     []string `json:"args"`
	Settings string   `json:"settings,omitempty"`
}

// procStat returns the start time, state and process group of pid.
func procStat(pid int) (start uint64, state string, pgrp int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", 0, err
	}
	// pid (comm) state ppid pgrp session ... ; comm may contain anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, "", 0, fmt.Errorf("bad stat for %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, "", 0, fmt.Errorf("bad stat for %d", pid)
	}
	pgrp, _ = strconv.Atoi(f[2])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return start, f[0], pgrp, nil
}

func (s *Stack) readPID(name string) (pidRecord, bool) {
	var r pidRecord
	b, err := os.ReadFile(s.pidPath(name))
	if err != nil || json.Unmarshal(b, &r) != nil || r.PID <= 1 {
		return r, false
	}
	return r, true
}

// alive reports whether the recorded process itself still runs.
func (r pidRecord) alive() bool {
	start, state, _, err := procStat(r.PID)
	return err == nil && start == r.Start && state != "Z" && state != "X"
}

// groupMembers lists live processes in process group pgid.
func groupMembers(pgid int) []int {
	var out []int
	for _, pid := range allPIDs() {
		_, state, pgrp, err := procStat(pid)
		if err == nil && pgrp == pgid && state != "Z" && state != "X" {
			out = append(out, pid)
		}
	}
	return out
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// ours reports whether signalling the record's process group reaches only
// what this stack started: the leader is the recorded process, or the
// leader is gone and members of its group remain (a PID cannot be reused
// while a process group of that ID exists).
func (r pidRecord) ours() bool {
	if r.alive() {
		return true
	}
	if start, _, _, err := procStat(r.PID); err == nil && start != r.Start {
		return false // the PID now belongs to someone else
	}
	// Gone, or a zombie leader: its group may live on.
	return len(groupMembers(r.PID)) > 0
}

// running returns the daemon's record when its process runs.
func (s *Stack) running(name string) (pidRecord, bool) {
	r, ok := s.readPID(name)
	if !ok || !r.alive() {
		return r, false
	}
	return r, true
}

// start starts d unless it already runs, and waits until it is ready.
func (s *Stack) start(ctx context.Context, d daemon) error {
	if r, ok := s.running(d.Name); ok && r.Settings != d.Settings {
		s.logf("%-16s runs (PID %d) with other settings (%s, want %s); restarting it", d.Name, r.PID, orNone(r.Settings), orNone(d.Settings))
		s.stopRecord(d.Name, r, 15*time.Second)
	} else if ok {
		if d.Ready != nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := retryUntil(cctx, func() error { return d.Ready(cctx, 0) })
			cancel()
			if err == nil {
				s.logf("%-16s already running (PID %d)", d.Name, r.PID)
				return nil
			}
			s.logf("%-16s RUNS (PID %d) BUT DOES NOT ANSWER: %v; restarting it (log: %s)", d.Name, r.PID, err, s.logPath(d.Name))
			s.stopRecord(d.Name, r, 15*time.Second)
		} else {
			s.logf("%-16s already running (PID %d)", d.Name, r.PID)
			return nil
		}
	}
	// A stale group (leader dead, children alive) is stopped first.
	if r, ok := s.readPID(d.Name); ok && r.ours() {
		s.stopRecord(d.Name, r, 10*time.Second)
	}
	if d.Prepare != nil {
		if err := d.Prepare(); err != nil {
			return fmt.Errorf("%s (%s): %w", d.Name, d.What, err)
		}
	}
	for _, addr := range d.Listens {
		if err := checkFree(addr); err != nil {
			return fmt.Errorf("%s (%s) cannot start: %v\n  something else listens there: stop it, or run `make down` if it is an older stack", d.Name, d.What, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(s.logPath(d.Name)), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.logPath(d.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fi, _ := logf.Stat()
	from := fi.Size()
	fmt.Fprintf(logf, "==== %s fnb-stack: %s\n", time.Now().Format(time.RFC3339), strings.Join(d.Args, " "))

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(d.Args[0], d.Args[1:]...)
	cmd.Env = d.Env
	cmd.Dir = d.Dir
	if cmd.Dir == "" {
		cmd.Dir = s.Dir
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	// Setsid: its own session and process group, no controlling terminal,
	// so it outlives fnb-stack and `down` can signal the whole tree.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: d.Cred, Cloneflags: d.Cloneflags}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s (%s): start %s: %v", d.Name, d.What, d.Args[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	start, _, _, err := procStat(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("%s (%s) exited at once: %v\n--- %s ---\n%s", d.Name, d.What, err, s.logPath(d.Name), logTail(s.logPath(d.Name), 3000))
	}
	rec, _ := json.Marshal(pidRecord{PID: cmd.Process.Pid, Start: start, Args: d.Args, Settings: d.Settings})
	if err := os.MkdirAll(filepath.Dir(s.pidPath(d.Name)), 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(s.pidPath(d.Name), append(rec, '\n'), 0o644); err != nil {
		return err
	}

	timeout := d.ReadyTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	t0 := time.Now()
	deadline := time.Now().Add(timeout)
	last := errors.New("not checked yet")
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("%s (%s) exited while starting: %v\n--- %s (tail) ---\n%s", d.Name, d.What, err, s.logPath(d.Name), logTail(s.logPath(d.Name), 4000))
		default:
		}
		if d.Ready == nil {
			last = nil
		} else {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			last = d.Ready(cctx, from)
			cancel()
		}
		if last == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (%s) not ready after %s: %v\n--- %s (tail) ---\n%s", d.Name, d.What, timeout, last, s.logPath(d.Name), logTail(s.logPath(d.Name), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.logf("%-16s started (PID %d, ready in %.1fs)", d.Name, cmd.Process.Pid, time.Since(t0).Seconds())
	return nil
}

// stop stops a daemon by its PID file: SIGTERM to its process group, then
// SIGKILL after grace. It reports whether anything was running.
func (s *Stack) stop(name string, grace time.Duration) bool {
	r, ok := s.readPID(name)
	if !ok {
		return false
	}
	if !r.ours() {
		os.Remove(s.pidPath(name))
		return false
	}
	s.stopRecord(name, r, grace)
	return true
}

func (s *Stack) stopRecord(name string, r pidRecord, grace time.Duration) {
	t0 := time.Now()
	pgid := r.PID
	signal := func(sig syscall.Signal) {
		if err := syscall.Kill(-pgid, sig); err != nil && r.alive() {
			syscall.Kill(r.PID, sig)
		}
	}
	signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for len(groupMembers(pgid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	how := "stopped"
	if len(groupMembers(pgid)) > 0 {
		how = fmt.Sprintf("KILLED (still running %s after SIGTERM)", grace)
		for i := 0; i < 200 && len(groupMembers(pgid)) > 0; i++ {
			signal(syscall.SIGKILL)
			time.Sleep(25 * time.Millisecond)
		}
	}
	os.Remove(s.pidPath(name))
	s.logf("%-16s %s (PID %d, %.1fs)", name, how, r.PID, time.Since(t0).Seconds())
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

// logTail returns the last n bytes of a log file.
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := max(fi.Size()-n, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	str := string(b)
	if off > 0 {
		if i := strings.IndexByte(str, '\n'); i >= 0 {
			str = str[i+1:]
		}
		str = "...\n" + str
	}
	return str
}

// logSince returns what a log gained after offset from.
func logSince(path string, from int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 4<<20))
	return string(b)
}
