package templateimage

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
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
// its fprocess), and a second Build with nothing changed builds nothing.
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
	b := Builder{Repo: repo, Registry: reg.Addr, Remote: remote, BuildKit: bb, GoproxyHost: "127.0.0.1",
		Tenant: "templateimage-test", Records: t.TempDir(), Logf: t.Logf}
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
}
