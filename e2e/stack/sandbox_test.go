package stack

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/e2e/internal/harness"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// checkProcessSandbox runs testenv's SandboxProbe through the stack's
// build-fn (its root address, streamed): a victim build holding a secret
// and an ENV value in a long step, and a concurrent spy build that reads
// and kills whatever it sees in /proc. The stack's rootless buildkitd must
// keep each step in its own PID namespace.
func checkProcessSandbox(t *testing.T, dir string) {
	bk := &testenv.BuildKit{Addr: "unix://" + filepath.Join(dir, "buildkit", "buildkitd.sock")}
	if mode := testenv.ProcessMode(t, bk); mode != "sandbox" {
		t.Fatalf("the stack's buildkitd reports process-mode %q, want sandbox", mode)
	}
	payload, err := os.ReadFile(filepath.Join(dir, "secrets", "payload-secret"))
	if err != nil {
		t.Fatal(err)
	}
	key := signature.Key(payload)
	pub, err := secrets.DecodePublicKey([]byte(httpGet(t, builderRoot+"/publickey")))
	if err != nil {
		t.Fatal(err)
	}
	p := harness.NewSandboxProbe(t)
	tag := testenv.RandomHex(t, 4)
	post := func(repo, dockerfile, secretID, secret string) *testenv.Stream {
		sealed, err := secrets.Seal(pub, map[string][]byte{secretID: []byte(secret)})
		if err != nil {
			t.Fatal(err)
		}
		body := buildTar(t, map[string][]byte{"Dockerfile": []byte(dockerfile)},
			builder.BuildConfig{Image: stackReg + "/e2e/" + repo + ":" + tag}, nil, sealed)
		return testenv.Follow(t, testenv.Post(t, builderRoot+"/build", body, testenv.SignedHeader(key, body, true)))
	}
	victim := post("sandbox-victim", p.VictimDockerfile(baseImage), harness.VictimSecretID, p.VictimSecret)
	victim.WaitLog(t, harness.VictimReady)
	spy := post("sandbox-spy", p.SpyDockerfile(baseImage), harness.SpySecretID, p.SpySecret)
	if fin := spy.Final(t, 5*time.Minute); fin.Status != progress.Success {
		t.Fatalf("spy build: %+v\n%s", fin, spy.LogText())
	}
	if fin := victim.Final(t, 5*time.Minute); fin.Status != progress.Success {
		t.Fatalf("victim build did not survive the spy: %+v\n%s", fin, victim.LogText())
	}
	reg := stackRegistry(t, dir)
	p.Check(t, testenv.ImageFile(t, reg, "e2e/sandbox-spy", tag, "/found"),
		testenv.ImageFile(t, reg, "e2e/sandbox-victim", tag, "/overlap"),
		testenv.ImageFile(t, reg, "e2e/sandbox-victim", tag, "/secret.sha256"))
}
