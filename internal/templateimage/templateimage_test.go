package templateimage

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// A function image built from template/fnbuilder-go offline, as the local
// stack and the cluster build theirs: real faas-cli, the stand-ins on an
// HTTPS registry with a user, a real buildkitd. The image is the
// template's (of-watchdog as ./fwatchdog for the user app, the handler as
// its fprocess), a second Build with nothing changed builds nothing, and
// a third one without the record hits BuildKit's cache at every RUN step:
// the module server listens on the same address, so the GOPROXY build arg
// is the same.
func TestBuildFromTemplate(t *testing.T) {
	testenv.FaasCLI(t)
	watchdog := testenv.SharedTool(t, "OF_WATCHDOG", "of-watchdog 0.11.6")
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	reg := testenv.StartSecureRegistry(t)
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{Trust: []*testenv.Registry{reg}})
	remote := reg.RemoteOptions(t)
	bb, err := reg.Registry.Builder(buildkit.Daemon{Address: bk.Addr}, reg.User)
	if err != nil {
		t.Fatal(err)
	}
	// A port that stays the same for the three builds, as the stack's and
	// the cluster's fixed ones do.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goproxy := l.Addr().String()
	l.Close()
	records := t.TempDir()
	b := Builder{Repo: repo, Registry: reg.Addr, Remote: remote, BuildKit: bb, Goproxy: goproxy,
		Tenant: "templateimage-test", Records: records, Logf: t.Logf}
	fns := []Function{{Name: "publickey-fn", Ref: reg.Addr + "/fnbuilder/publickey-fn:test"}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	first, err := b.Build(ctx, fns)
	if err != nil {
		t.Fatalf("%v\n(buildkitd log: %s)", err, bk.LogPath)
	}
	im := first["publickey-fn"]
	if !im.Built || im.Digest == "" {
		t.Fatalf("first build: %+v, want built with a digest", im)
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(testenv.ImageConfig(t, reg, "fnbuilder/publickey-fn", "test"), &cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.User != "app" || c.WorkingDir != "/home/app" || !slices.Equal(c.Cmd, []string{"./fwatchdog"}) ||
		!slices.Contains(c.Env, "fprocess=./handler") || !slices.Contains(c.Env, "mode=http") {
		t.Errorf("image config user %q workdir %q cmd %q env %q: not the template's", c.User, c.WorkingDir, c.Cmd, c.Env)
	}
	want, err := os.ReadFile(watchdog)
	if err != nil {
		t.Fatal(err)
	}
	if got := testenv.ImageFile(t, reg, "fnbuilder/publickey-fn", "test", "/home/app/fwatchdog"); !bytes.Equal(got, want) {
		t.Errorf("/home/app/fwatchdog (%d bytes) is not OF_WATCHDOG (%d bytes)", len(got), len(want))
	}
	if len(testenv.ImageFile(t, reg, "fnbuilder/publickey-fn", "test", "/home/app/handler")) == 0 {
		t.Error("/home/app/handler is empty")
	}

	second, err := b.Build(ctx, fns)
	if err != nil {
		t.Fatal(err)
	}
	if im2 := second["publickey-fn"]; im2.Built || im2.Digest != im.Digest {
		t.Errorf("second build with nothing changed: %+v, want the first digest %s, not built", im2, im.Digest)
	}
	if _, err := os.Stat(filepath.Join(records, "golang-stand-in.json")); err != nil {
		t.Errorf("the golang stand-in's fingerprint is not recorded: %v", err)
	}

	// Without its record the image is built again, by a new module cache
	// server on the same address: BuildKit runs none of the RUN steps
	// again (the GOPROXY build arg, part of their cache key, is the same).
	if err := os.Remove(filepath.Join(records, "publickey-fn.json")); err != nil {
		t.Fatal(err)
	}
	third, err := b.Build(ctx, fns)
	if err != nil {
		t.Fatal(err)
	}
	if !third["publickey-fn"].Built {
		t.Fatalf("third build without a record: %+v, want built", third["publickey-fn"])
	}
	log, err := os.ReadFile(filepath.Join(records, "publickey-fn.log"))
	if err != nil {
		t.Fatal(err)
	}
	var runs, ran []string
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "] RUN ") {
			runs = append(runs, line)
			if !strings.HasSuffix(line, " CACHED") {
				ran = append(ran, line)
			}
		}
	}
	if len(runs) == 0 || len(ran) > 0 || !strings.Contains(string(log), "go mod download CACHED") {
		t.Errorf("third build with the same inputs ran RUN steps again (want every one CACHED, go mod download too):\n%s\n--- log ---\n%s",
			strings.Join(ran, "\n"), log)
	}
}
