package daemon

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// A group starts a member once (a second Start finds it running), starts
// it again when its settings change, lists what runs, finds a process that
// names its directory but has no record, and stops by record.
func TestGroup(t *testing.T) {
	var lines []string
	g := Group{Dir: t.TempDir(), Logf: func(f string, a ...any) { lines = append(lines, f) }}
	m := Member{Spec: Spec{Name: "sleeper", Args: []string{"/bin/sleep", "300"}, Settings: "a"}, What: "a sleeper"}
	ctx := context.Background()
	if err := g.Start(ctx, m); err != nil {
		t.Fatal(err)
	}
	first, ok := g.Running("sleeper")
	if !ok {
		t.Fatal("not running after Start")
	}
	if err := g.Start(ctx, m); err != nil {
		t.Fatal(err)
	}
	if again, _ := g.Running("sleeper"); again.PID != first.PID {
		t.Fatalf("a second Start restarted it: PID %d, then %d", first.PID, again.PID)
	}
	m.Settings = "b"
	if err := g.Start(ctx, m); err != nil {
		t.Fatal(err)
	}
	second, _ := g.Running("sleeper")
	if second.PID == first.PID || first.Alive() {
		t.Fatalf("other settings kept PID %d (first alive: %v)", second.PID, first.Alive())
	}
	if live := g.Live(); len(live) != 1 || live["sleeper"] != second.PID {
		t.Fatalf("Live = %v", live)
	}
	if recs := g.Records(); len(recs) != 1 || recs["sleeper"].PID != second.PID || recs["sleeper"].Start != second.Start {
		t.Fatalf("Records = %v, want sleeper: %v", recs, second)
	}
	if err := g.Check(ctx, m); err != nil {
		t.Fatal(err)
	}

	stray := exec.Command("/bin/sh", "-c", "sleep 300", g.Dir+"/stray")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stray.Process.Kill(); stray.Wait() })
	strays := g.Strays(nil)
	if !slices.ContainsFunc(strays, func(s Stray) bool { return s.PID == stray.Process.Pid }) {
		t.Fatalf("Strays = %v, want PID %d", strays, stray.Process.Pid)
	}
	if skipped := g.Strays(func(argv []string) bool { return strings.HasSuffix(argv[len(argv)-1], "/stray") }); len(skipped) != len(strays)-1 {
		t.Fatalf("skip kept %v", skipped)
	}

	g.Stop("sleeper", 5*time.Second)
	if _, ok := g.Running("sleeper"); ok || second.Alive() {
		t.Fatal("still running after Stop")
	}
	if len(g.Recorded()) != 0 {
		t.Fatalf("records left: %v", g.Recorded())
	}
	if err := g.Check(ctx, m); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("Check after Stop = %v", err)
	}
	t.Logf("log lines: %q", lines)
}
