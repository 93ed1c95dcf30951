package hardening

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestRegistryRefusals builds against a registry of the local stack's
// shape: HTTPS from a private CA that buildkitd trusts, and htpasswd users.
// A certificate from a CA buildkitd does not trust, a wrong password and a
// registry that is down each end the build with a failed result that names
// the cause — a permanent error is not retried — and then the slot is free
// and the next build, with the right credentials, succeeds.
func TestRegistryRefusals(t *testing.T) {
	reg := testenv.StartSecureRegistry(t)
	stranger := testenv.StartSecureRegistry(t) // its certificate is from another CA
	// buildkitd trusts reg's CA, for reg and for the stranger's address.
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{Trust: []*testenv.Registry{reg, {Registry: daemon.Registry{Addr: stranger.Addr, CA: reg.CA}}}})
	s := &stack{&testenv.Stack{Reg: reg, BK: bk, Base: testenv.PushBusybox(t, bk, reg)}}
	builderWith := func(config []byte) *builder {
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, config, 0o600); err != nil {
			t.Fatal(err)
		}
		return startBuilder(t, newKeys(t), map[string]string{"buildkit_url": bk.Addr, "registry_config_path": path,
			"max_inflight": "1", "build_retries": "3", "retry_backoff": "200ms"})
	}
	good, wrong := builderWith(reg.DockerConfig(t, "")), builderWith(reg.DockerConfig(t, "not-the-password"))

	for _, c := range []struct {
		name, image string
		b           *builder
		want        []string // in the error
		permanent   bool
		before      func()
	}{
		{"certificate from an unknown CA", stranger.Addr + "/refused:1", good, []string{"x509", "unknown authority"}, true, nil},
		{"wrong password", reg.Addr + "/refused:1", wrong, []string{"401 Unauthorized"}, true, nil},
		{"registry down", reg.Addr + "/refused:1", good, []string{"connection refused"}, false, func() { reg.Stop(t) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before()
			}
			body := buildTar(t, "FROM "+s.Base+"\nRUN echo refused-"+testenv.RandomHex(t, 4)+" > /x\n", c.image)
			start := time.Now()
			fin := c.b.stream(t, body)
			res, logs := fin.Final(t, 2*time.Minute), fin.LogText()
			t.Logf("failed after %s: %s", time.Since(start).Round(time.Millisecond), res.Error)
			if res.Status != progress.Failed {
				t.Fatalf("final %+v, want failed\n%s", res, logs)
			}
			for _, w := range c.want {
				if !strings.Contains(res.Error, w) {
					t.Errorf("error %q does not say %q", res.Error, w)
				}
			}
			if retried := strings.Contains(logs, "transient error, retrying"); retried == c.permanent {
				t.Errorf("retried: %v, want %v for this error\n%s", retried, !c.permanent, logs)
			}
			if n := c.b.Runs.Load(); n != 1 {
				t.Errorf("%d runs through the outer runner, want 1", n)
			}
			c.b.Runs.Store(0)
			slotFree(t, c.b)
			c.b.workDirEmpty(t)
			if c.before != nil {
				reg.Restart(t)
			}
			if testenv.TagExists(t, reg, "refused", "1") {
				t.Fatal("an image was pushed")
			}
			nextBuildSucceeds(t, s, good, "after-"+strings.ToLower(strings.ReplaceAll(c.name, " ", "-")))
			good.Runs.Store(0)
		})
	}
}

// helperScript is docker-credential-fnbtest, a credential helper of the
// docker-credential-helpers protocol (as ecr-login, gcr and acr-env are):
// `get` reads a server URL on stdin and prints its credentials as JSON.
// It hands out the password in its state file at the moment it is asked,
// as a helper minting short-lived tokens would, and notes each question.
const helperScript = `#!/bin/sh
[ "$1" = get ] || { echo "fnbtest: only get" >&2; exit 1; }
read -r server
echo "$server" >> %[1]s/asked
if [ "$server" != %[2]q ]; then
	echo "credentials not found in native keychain"
	exit 1
fi
printf '{"ServerURL":"%%s","Username":"robot","Secret":"%%s"}\n' "$server" "$(cat %[1]s/password)"
`

// TestRotatingRegistryCredentials runs one build-fn, never restarted,
// against a registry whose password rotates. build-fn's config.json names
// a credential helper for the registry; every build asks it again, so a
// rotated password needs no restart, and a stale one fails the build at
// once as unauthorized. Then config.json itself is rewritten (a rotated
// Kubernetes secret) to a plain login, which the next build uses.
func TestRotatingRegistryCredentials(t *testing.T) {
	reg := testenv.StartSecureRegistry(t)
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{Trust: []*testenv.Registry{reg}})
	s := &stack{&testenv.Stack{Reg: reg, BK: bk, Base: testenv.PushBusybox(t, bk, reg)}}

	helperDir, state := t.TempDir(), t.TempDir()
	script := fmt.Sprintf(helperScript, state, reg.Addr)
	if err := os.WriteFile(filepath.Join(helperDir, "docker-credential-fnbtest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", helperDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	handOut := func(password string) {
		t.Helper()
		if err := daemon.WriteFileAtomic(filepath.Join(state, "password"), []byte(password), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	asked := func() int {
		b, _ := os.ReadFile(filepath.Join(state, "asked"))
		return strings.Count(string(b), reg.Addr+"\n")
	}
	configPath := filepath.Join(t.TempDir(), "config.json")
	writeConfig := func(config []byte) {
		t.Helper()
		if err := daemon.WriteFileAtomic(configPath, config, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig([]byte(`{"credHelpers":{"` + reg.Addr + `":"fnbtest"}}`))
	b := startBuilder(t, newKeys(t), map[string]string{"buildkit_url": bk.Addr, "registry_config_path": configPath,
		"max_builds": "1", "build_retries": "3", "retry_backoff": "200ms"})

	// build pushes REG/rotating:tag and returns how it ended.
	build := func(tag string) (progress.Result, string) {
		t.Helper()
		body := buildTar(t, "FROM "+s.Base+"\nRUN echo "+tag+"-"+testenv.RandomHex(t, 4)+" > /x\n", reg.Addr+"/rotating:"+tag)
		start := time.Now()
		st := b.stream(t, body)
		res := st.Final(t, 3*time.Minute)
		t.Logf("build %s: %s after %s %s", tag, res.Status, time.Since(start).Round(time.Millisecond), res.Error)
		return res, st.LogText()
	}
	pushed := func(tag string) {
		t.Helper()
		before := asked()
		if res, logs := build(tag); res.Status != progress.Success {
			t.Fatalf("build %s: %+v\n%s", tag, res, logs)
		}
		if !testenv.TagExists(t, reg, "rotating", tag) {
			t.Fatalf("build %s succeeded but rotating:%s is not in the registry", tag, tag)
		}
		if asked() == before {
			t.Errorf("build %s pushed without asking the credential helper", tag)
		}
	}

	p1 := "p1-" + testenv.RandomHex(t, 8)
	reg.SetPassword(t, "robot", p1)
	handOut(p1)
	pushed("p1")

	p2 := "p2-" + testenv.RandomHex(t, 8)
	reg.SetPassword(t, "robot", p2)
	handOut(p2)
	pushed("p2")

	// The twin: a helper handing out the password before the rotation.
	handOut(p1)
	res, logs := build("stale")
	if res.Status != progress.Failed || !strings.Contains(strings.ToLower(res.Error), "unauthorized") {
		t.Fatalf("stale password: %+v, want failed saying unauthorized\n%s", res, logs)
	}
	if strings.Contains(logs, "transient error, retrying") {
		t.Errorf("a refused password was retried\n%s", logs)
	}
	if testenv.TagExists(t, reg, "rotating", "stale") {
		t.Fatal("an image was pushed with a stale password")
	}
	slotFree(t, b)

	// config.json rewritten to a plain login with the current password:
	// the next build uses it, and the helper (still stale) is not asked.
	writeConfig(daemon.DockerConfig(reg.Addr, "robot", p2))
	before := asked()
	if res, logs := build("secret"); res.Status != progress.Success {
		t.Fatalf("after config.json was rewritten: %+v\n%s", res, logs)
	}
	if !testenv.TagExists(t, reg, "rotating", "secret") {
		t.Fatal("rotating:secret is not in the registry")
	}
	if n := asked() - before; n != 0 {
		t.Errorf("the credential helper was asked %d times after config.json no longer named it", n)
	}
	b.workDirEmpty(t)
}
