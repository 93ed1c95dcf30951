// Package testenv starts the real daemons the end-to-end tests need — a
// local plain-HTTP registry (Debian's docker-registry) and buildkitd v0.33.1,
// rootless under rootlesskit when it can — and gives helpers to inspect what
// ends up in the registry and on disk.
//
// It never skips: when a binary is missing the test fails loudly with its
// name and "run hack/install.sh". Every daemon is stopped and its state
// removed in t.Cleanup.
//
// Environment:
//
//	FNB_TOOLS          tools dir (default $HOME/.cache/fnbuilder); binaries in $FNB_TOOLS/bin
//	FNB_BUILDKIT_MODE  "rootless" or "root" forces that mode (failure is fatal);
//	                   unset tries rootless first and falls back to root
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Tools returns the directory holding buildkitd and buildctl:
// $FNB_TOOLS/bin, or $HOME/.cache/fnbuilder/bin.
func Tools() string {
	base := os.Getenv("FNB_TOOLS")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			home = "/root"
		}
		base = filepath.Join(home, ".cache", "fnbuilder")
	}
	return filepath.Join(base, "bin")
}

// childPath is PATH for the daemons: buildkitd finds runc (in /usr/sbin on
// Debian) and rootlesskit finds newuidmap through it.
func childPath() string {
	return strings.Join([]string{Tools(), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}, ":")
}

// findTool returns the path of a binary from Tools(), $PATH or the sbin
// directories, or "" when there is none.
func findTool(name string) string {
	candidates := []string{filepath.Join(Tools(), name)}
	if p, err := exec.LookPath(name); err == nil {
		candidates = append(candidates, p)
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		candidates = append(candidates, filepath.Join(d, name))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			if abs, err := filepath.Abs(c); err == nil {
				return abs
			}
			return c
		}
	}
	return ""
}

// mustTool is findTool that fails the test when the binary is missing.
func mustTool(t testing.TB, name string) string {
	t.Helper()
	p := findTool(name)
	if p == "" {
		t.Fatalf("testenv: %s not found (looked in %s, $PATH, /usr/sbin, /sbin): run hack/install.sh", name, Tools())
	}
	return p
}

// proc is one daemon started in its own process group.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // valid once done is closed
	mu      sync.Mutex
	gone    bool // the whole process group is known to be gone
}

// startProc starts cmd in a new process group (so the whole tree can be
// signalled), with stdout and stderr appended to logPath.
func startProc(name string, cmd *exec.Cmd, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout = logf
	cmd.Stderr = logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// If the test binary dies without running its cleanups, take the daemon along.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signalGroup signals the process group led by the daemon. The group may
// outlive its leader (children of rootlesskit), so it is signalled even
// after the leader exited.
func (p *proc) signalGroup(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		// Never signal a process group id that may have been reused.
		return
	}
	pgid := p.cmd.Process.Pid
	if err := syscall.Kill(-pgid, sig); err != nil {
		if !p.exited() {
			_ = p.cmd.Process.Signal(sig)
		} else if errors.Is(err, syscall.ESRCH) {
			p.gone = true
		}
	}
}

// stop sends SIGTERM to the group, waits up to grace, then SIGKILLs the
// group and waits for the leader.
func (p *proc) stop(grace time.Duration) (graceful bool) {
	if !p.exited() {
		p.signalGroup(syscall.SIGTERM)
		select {
		case <-p.done:
			graceful = true
		case <-time.After(grace):
		}
	}
	p.kill()
	return graceful
}

// kill SIGKILLs the group and waits for the leader.
func (p *proc) kill() {
	p.signalGroup(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
	}
	// Stragglers of the group (the leader is gone now), until none is left.
	pgid := p.cmd.Process.Pid
	for i := 0; i < 250 && groupAlive(pgid); i++ {
		p.signalGroup(syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
	if !groupAlive(pgid) {
		p.mu.Lock()
		p.gone = true
		p.mu.Unlock()
	}
}

// groupAlive reports whether a live (not zombie) process is in group pgid.
func groupAlive(pgid int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
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
	off := fi.Size() - n
	if off < 0 {
		off = 0
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	s := string(b)
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		s = "...\n" + s
	}
	return s
}

// removeAll removes a daemon's state dir as root. A daemon killed hard may
// leave mounts behind (root mode): they are lazily unmounted first.
func removeAll(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil {
		return nil
	}
	for _, m := range mountsUnder(dir) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	// Some files may have been made immutable-ish by permissions only; root
	// ignores those, so one retry is enough.
	if err2 := os.RemoveAll(dir); err2 != nil {
		return errors.Join(err, err2)
	}
	return nil
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 etc.) of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// onceCleanup runs f at most once, whether from Cleanup or an explicit call.
type onceCleanup struct {
	once sync.Once
	f    func()
}

func (o *onceCleanup) run() { o.once.Do(o.f) }
