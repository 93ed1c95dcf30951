package hardening

import (
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/e2e/internal/harness"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestProcessSandbox: two concurrent builds on one rootless buildkitd,
// started as the local stack starts it. The victim's long step holds a
// secret mount and an ENV value; the spy's step reads /run/secrets,
// environ and cmdline of every process in /proc and kills all of them but
// itself. BuildKit's process sandbox (a PID namespace per step) must hide
// the victim completely: the spy finds only its own secret and ENV, and
// the victim's build succeeds.
func TestProcessSandbox(t *testing.T) {
	s := &stack{testenv.StartStack(t, "", testenv.BuildKitOptions{Mode: testenv.ModeRootless})}
	reg := s.Reg
	if mode := testenv.ProcessMode(t, s.BK); mode != "sandbox" {
		t.Fatalf("buildkitd's worker reports process-mode %q, want sandbox", mode)
	}
	b := s.builderOn(t, nil)
	p := harness.NewSandboxProbe(t)

	post := func(image, dockerfile, secretID, secret string) *testenv.Stream {
		body := buildTar(t, dockerfile, image,
			testenv.File("com.openfaas.secrets", string(b.keys.seal(t, map[string]string{secretID: secret}))))
		return b.stream(t, body)
	}
	victim := post(reg.Addr+"/victim:1", p.VictimDockerfile(s.Base), harness.VictimSecretID, p.VictimSecret)
	victim.WaitLog(t, harness.VictimReady)
	spy := post(reg.Addr+"/spy:1", p.SpyDockerfile(s.Base), harness.SpySecretID, p.SpySecret)

	if fin := spy.Final(t, 3*time.Minute); fin.Status != progress.Success {
		t.Fatalf("spy build: %+v\n%s", fin, spy.LogText())
	}
	if fin := victim.Final(t, 3*time.Minute); fin.Status != progress.Success {
		t.Fatalf("victim build did not survive the spy: %+v\n%s", fin, victim.LogText())
	}
	p.Check(t, testenv.ImageFile(t, reg, "spy", "1", "/found"),
		testenv.ImageFile(t, reg, "victim", "1", "/overlap"),
		testenv.ImageFile(t, reg, "victim", "1", "/secret.sha256"))
}
