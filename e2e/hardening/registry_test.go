package hardening

import (
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
			if n := c.b.runs.Load(); n != 1 {
				t.Errorf("%d runs through the outer runner, want 1", n)
			}
			c.b.runs.Store(0)
			slotFree(t, c.b)
			c.b.workDirEmpty(t)
			if c.before != nil {
				reg.Restart(t)
			}
			if testenv.TagExists(t, reg, "refused", "1") {
				t.Fatal("an image was pushed")
			}
			nextBuildSucceeds(t, s, good, "after-"+strings.ToLower(strings.ReplaceAll(c.name, " ", "-")))
			good.runs.Store(0)
		})
	}
}
