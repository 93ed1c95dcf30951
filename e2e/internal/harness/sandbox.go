package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// SandboxProbe is a pair of builds that checks BuildKit's process sandbox:
// a victim whose long RUN step holds a secret mount, an ENV value and a
// marker on its command line, and a spy, run while the victim's step
// waits, that reads /run/secrets, environ and cmdline of every process it
// sees under /proc, kills every PID but its own, and writes what it read
// to /found in its image. With the sandbox each step has its own PID
// namespace, so the spy sees only itself: its own secret and ENV (the twin
// check that the spy works) and none of the victim's. The two steps meet
// through a cache mount: the victim waits for the spy's "done" file, which
// proves the spy ran while the victim's step was alive.
type SandboxProbe struct {
	id                                 string
	VictimSecret, VictimEnv, VictimCmd string
	SpySecret, SpyEnv                  string
}

// Secret ids the probe's builds mount.
const (
	VictimSecretID = "victim_token"
	SpySecretID    = "spy_token"
)

// VictimReady is what the victim's step prints once it waits for the spy.
const VictimReady = "victim-step-waiting"

// NewSandboxProbe makes fresh markers, so nothing from an earlier run
// (cache mounts, images) can stand in for this one.
func NewSandboxProbe(t testing.TB) *SandboxProbe {
	t.Helper()
	id := testenv.RandomHex(t, 8)
	return &SandboxProbe{
		id:           id,
		VictimSecret: "victim-secret-" + testenv.RandomHex(t, 12),
		VictimEnv:    "victim-env-" + testenv.RandomHex(t, 12),
		VictimCmd:    "victim-cmd-" + testenv.RandomHex(t, 12),
		SpySecret:    "spy-secret-" + testenv.RandomHex(t, 12),
		SpyEnv:       "spy-env-" + testenv.RandomHex(t, 12),
	}
}

func (p *SandboxProbe) cacheMount() string {
	return "--mount=type=cache,id=fnb-sandbox-" + p.id + ",target=/sync,sharing=shared"
}

// VictimDockerfile waits (at most 120 s) for the spy, then writes
// /overlap ("spy ran while I waited") and the SHA-256 of its secret as it
// reads it then.
func (p *SandboxProbe) VictimDockerfile(base string) string {
	return fmt.Sprintf(`FROM %s
ENV FNB_VICTIM_ENV=%s
RUN --mount=type=secret,id=%s,required=true %s \
    : %s; echo %s; i=0; \
    while [ ! -e /sync/spy-done ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; \
    if [ -e /sync/spy-done ]; then echo spy-ran-meanwhile > /overlap; else echo spy-never-ran > /overlap; fi; \
    sha256sum /run/secrets/%s | cut -c1-64 > /secret.sha256
`, base, p.VictimEnv, VictimSecretID, p.cacheMount(), p.VictimCmd, VictimReady, VictimSecretID)
}

// SpyDockerfile scans /proc and kills what it sees, then signals the victim.
func (p *SandboxProbe) SpyDockerfile(base string) string {
	return fmt.Sprintf(`FROM %s
ENV FNB_SPY_ENV=%s
RUN --mount=type=secret,id=%s,required=true %s \
    me=$$; n=0; \
    for d in /proc/[0-9]*; do pid=${d#/proc/}; n=$((n+1)); echo "== pid $pid" >> /found; \
      cat $d/root/run/secrets/* >> /found 2>/dev/null; echo >> /found; \
      tr '\0' '\n' < $d/environ >> /found 2>/dev/null; \
      tr '\0' ' ' < $d/cmdline >> /found 2>/dev/null; echo >> /found; \
      if [ "$pid" != "$me" ]; then kill -9 $pid 2>/dev/null && echo "killed $pid" >> /found; fi; \
    done; echo "pids seen: $n" >> /found; touch /sync/spy-done
`, base, p.SpyEnv, SpySecretID, p.cacheMount())
}

// Check asserts what the two images hold: the spy found its own secret and
// ENV and nothing of the victim's, and the victim ran through the spy's
// scan with its secret intact. found, overlap and secretSum are the spy's
// /found and the victim's /overlap and /secret.sha256.
func (p *SandboxProbe) Check(t testing.TB, found, overlap, secretSum []byte) {
	t.Helper()
	t.Logf("the spy's /found:\n%s", found)
	for what, own := range map[string]string{"secret": p.SpySecret, "ENV value": p.SpyEnv} {
		if !strings.Contains(string(found), own) {
			t.Errorf("twin check failed: the spy did not find its own %s %q in its own /proc; it proves nothing", what, own)
		}
	}
	for what, theirs := range map[string]string{"secret": p.VictimSecret, "ENV value": p.VictimEnv, "command line": p.VictimCmd} {
		if strings.Contains(string(found), theirs) {
			t.Errorf("the spy read the concurrent build's %s %q through /proc: no process sandbox", what, theirs)
		}
	}
	if got := strings.TrimSpace(string(overlap)); got != "spy-ran-meanwhile" {
		t.Errorf("victim's /overlap = %q: the spy's scan did not run while the victim's step waited", got)
	}
	sum := sha256.Sum256([]byte(p.VictimSecret))
	if got := strings.TrimSpace(string(secretSum)); got != hex.EncodeToString(sum[:]) {
		t.Errorf("victim's /secret.sha256 = %q, want the SHA-256 of its secret", got)
	}
}
