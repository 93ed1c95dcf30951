package testenv

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// TestStack starts the registry and buildkitd for real, pushes the busybox
// base image and reads it back from the registry.
func TestStack(t *testing.T) {
	reg := StartRegistry(t)
	bk := StartBuildKit(t, BuildKitOptions{InsecureRegistries: []string{reg.Addr}})
	t.Logf("registry %s, buildkitd %s (rootless=%v)", reg.Addr, bk.Addr, bk.Rootless)
	if mode := ProcessMode(t, bk); mode != "sandbox" {
		t.Fatalf("worker process-mode %q, want sandbox (each build step in its own PID namespace)", mode)
	}

	ref := PushBusybox(t, bk, reg)
	if want := reg.Addr + "/busybox:latest"; ref != want {
		t.Fatalf("PushBusybox = %q, want %q", ref, want)
	}

	want, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	got := ImageFile(t, reg, "busybox", "latest", "bin/busybox")
	if len(got) == 0 || !bytes.Equal(got, want) {
		t.Fatalf("bin/busybox in image: %d bytes, differs from /bin/busybox (%d bytes)", len(got), len(want))
	}
	// A symlink resolves to the binary.
	if sh := ImageFile(t, reg, "busybox", "latest", "/bin/sh"); !bytes.Equal(sh, want) {
		t.Fatalf("/bin/sh does not resolve to busybox")
	}
	var cfg struct {
		Config struct{ Env []string } `json:"config"`
	}
	if err := json.Unmarshal(ImageConfig(t, reg, "busybox", "latest"), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Env) != 1 || cfg.Config.Env[0] != "PATH=/bin" {
		t.Fatalf("config Env = %q", cfg.Config.Env)
	}

	// The base image works for RUN steps (runc inside buildkitd), and
	// whiteouts hide deleted files.
	dir := t.TempDir()
	df := "FROM " + ref + "\nARG GREETING=hello\nRUN mkdir -p /home/app && echo \"$GREETING\" > /home/app/greeting.txt && echo gone > /home/app/deleted.txt\nRUN rm /home/app/deleted.txt\n"
	WriteFiles(t, dir, map[string]string{"Dockerfile": df})
	if dgst := BuildPush(t, bk, reg, dir, reg.Addr+"/app:v1", map[string]string{"GREETING": "hi-there"}); dgst == "" {
		t.Fatal("no image digest")
	}
	if g := ImageFile(t, reg, "app", "v1", "home/app/greeting.txt"); string(g) != "hi-there\n" {
		t.Fatalf("greeting.txt = %q", g)
	}
	if _, ok := LookupImageFile(t, reg, "app", "v1", "home/app/deleted.txt"); ok {
		t.Fatal("deleted.txt visible through its whiteout")
	}
	if hits := FindInImage(t, reg, "app", "v1", []byte("hi-there")); len(hits) == 0 {
		t.Fatal("FindInImage found nothing")
	}

	// The daemon restarts on the same state.
	bk.Restart(t)
	if !bk.Running() {
		t.Fatal("buildkitd not running after Restart")
	}
}
