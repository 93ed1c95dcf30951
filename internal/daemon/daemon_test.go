package daemon

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A daemon whose shell leaves a child behind: Stop ends the whole group,
// the record is no longer ours, and the PID file is gone.
func TestStartStop(t *testing.T) {
	dir := t.TempDir()
	log, pidFile := filepath.Join(dir, "d.log"), filepath.Join(dir, "d.pid")
	p, err := Start(context.Background(), Spec{
		Name:    "sleeper",
		Args:    []string{"/bin/sh", "-c", "sleep 300 & echo ready; wait"},
		LogPath: log, PIDFile: pidFile, Settings: "s=1",
		Ready: func(ctx context.Context, from int64) error {
			if strings.Contains(Since(log, from), "ready") {
				return nil
			}
			return errors.New("not yet")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := ReadRecord(pidFile)
	if !ok || r.PID != p.PID || r.Start != p.Start || r.Settings != "s=1" || !r.Alive() || !r.Ours() {
		t.Fatalf("record %+v (ok %v), process %+v", r, ok, p.Record)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(GroupMembers(p.PID)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the shell's child never showed in its group: %v", GroupMembers(p.PID))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !p.Stop(10 * time.Second) {
		t.Error("SIGTERM was not enough for sh and sleep")
	}
	if m := GroupMembers(p.PID); len(m) > 0 || r.Ours() || !p.Exited() {
		t.Errorf("after Stop: group %v, ours %v, exited %v", m, r.Ours(), p.Exited())
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("PID file left: %v", err)
	}
}

// A record whose start time does not match is someone else's process:
// it is never signalled.
func TestRecordNeverSignalsAReusedPID(t *testing.T) {
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	st, err := Stat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	stale := Record{PID: cmd.Process.Pid, Start: st.Start + 1}
	if stale.Alive() || stale.Ours() {
		t.Fatalf("a record with another start time counts as ours")
	}
	stale.Stop(0)
	if now, err := Stat(cmd.Process.Pid); err != nil || !now.live() {
		t.Fatalf("the unrelated process was signalled: %+v %v", now, err)
	}
}

// A daemon that never gets ready is stopped, and the error shows its log.
func TestStartNotReady(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Spec{
		Name:         "mute",
		Args:         []string{"/bin/sh", "-c", "echo started-but-mute; exec sleep 300"},
		LogPath:      filepath.Join(dir, "mute.log"),
		ReadyTimeout: 500 * time.Millisecond,
		Ready:        func(context.Context, int64) error { return errors.New("no answer") },
	})
	if err == nil || !strings.Contains(err.Error(), "not ready after") || !strings.Contains(err.Error(), "started-but-mute") {
		t.Fatalf("err = %v", err)
	}
	for _, pid := range PIDs() {
		if b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); strings.Contains(string(b), "started-but-mute") {
			if st, err := Stat(pid); err == nil && st.live() {
				t.Errorf("the daemon that was not ready still runs: %d", pid)
			}
		}
	}
}

// Mounts under a directory are found, deepest first, and RemoveAll gets
// past them.
func TestMountsUnder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount")
	}
	dir := t.TempDir()
	outer, inner := filepath.Join(dir, "a b"), filepath.Join(dir, "a b", "c")
	for _, m := range []string{outer, inner} {
		if err := os.MkdirAll(m, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", m, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := MountsUnder(dir); len(got) != 2 || got[0] != inner || got[1] != outer {
		t.Fatalf("MountsUnder = %q, want [%q %q]", got, inner, outer)
	}
	if err := RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if got := MountsUnder(dir); len(got) != 0 {
		t.Fatalf("after RemoveAll: %q", got)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/var/lib/a`:          "/var/lib/a",
		`/tmp/with\040space`:  "/tmp/with space",
		`/tmp/tab\011x\134y`:  "/tmp/tab\tx\\y",
		`/tmp/not\08escape\0`: `/tmp/not\08escape\0`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// buildkitd.toml: plain HTTP or a CA copied where buildkitd reads it.
func TestBuildKitdConfig(t *testing.T) {
	b := BuildKitd{Dir: "/x", GC: true, Registries: []RegistryAccess{{Host: "127.0.0.1:5000", PlainHTTP: true}, {Host: "10.0.0.1:5001", CA: "/secret/ca.pem"}}}
	want := "[registry.\"127.0.0.1:5000\"]\n  http = true\n  insecure = true\n\n[registry.\"10.0.0.1:5001\"]\n  http = false\n  ca = [\"/x/tls/registry-10.0.0.1_5001.pem\"]\n"
	if got := b.config(); !strings.Contains(got, want) || !strings.Contains(got, "gc = true") {
		t.Errorf("config:\n%s\nwant it to contain:\n%s", got, want)
	}
}
