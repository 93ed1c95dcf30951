package hardening

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestSecretsScan builds with two sealed secrets, one printed by its step
// and one only hashed, then looks for each plaintext everywhere a build
// could leave it: build-fn's work_dir and results_dir, buildkitd's whole
// directory (state, config, log), the registry's storage and log, the
// pushed image (manifest, config with its history, every layer), the
// streamed log, the stored async result, and build-fn's own log output.
func TestSecretsScan(t *testing.T) {
	logs := &testenv.SyncBuffer{} // build-fn's own log output, through the standard logger
	log.SetOutput(logs)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })

	s := startStack(t)
	b := s.builderOn(t, nil)
	alpha := "alpha-" + testenv.RandomHex(t, 16)
	beta := "beta-" + testenv.RandomHex(t, 16)
	betaSum := sha256.Sum256([]byte(beta))
	repo, tag := "secrets-scan", "1"
	image := s.Reg.Addr + "/" + repo + ":" + tag
	dockerfile := "FROM " + s.Base + "\n" +
		"RUN --mount=type=secret,id=alpha echo \"alpha is $(cat /run/secrets/alpha)\"\n" +
		"RUN --mount=type=secret,id=alpha echo encoded-start && base64 /run/secrets/alpha && xxd -p /run/secrets/alpha && " +
		"echo \"$(cat /run/secrets/alpha)\" | base64 && printf 'ci:%s' \"$(cat /run/secrets/alpha)\" | base64 && echo encoded-end\n" +
		"RUN --mount=type=secret,id=beta sha256sum /run/secrets/beta | cut -d' ' -f1 > /beta.sha256 && echo \"beta hash $(cat /beta.sha256)\"\n"
	body := testenv.BuildTar(t, testenv.Dir("context/"), testenv.File("context/Dockerfile", dockerfile),
		testenv.File("com.openfaas.secrets", string(b.keys.seal(t, map[string]string{"alpha": alpha, "beta": beta}))),
		testenv.ConfigEntry(t, map[string]any{"image": image}))
	const callID = "secrets-scan-call-1"
	header := testenv.SignedHeader(b.keys.payload, body, true)
	header.Set("X-Call-Id", callID)

	fin, streamed := final(t, testenv.Post(t, b.url+"/build", body, header))
	if fin.Status != progress.Success || fin.Image != image {
		t.Fatalf("final %+v\nlog:\n%s", fin, streamed)
	}
	// The secrets reached the build: one printed (and redacted), one hashed.
	if !strings.Contains(streamed, "alpha is "+secrets.Mask) {
		t.Fatalf("the printed secret is missing or not redacted in the stream:\n%s", streamed)
	}
	if got := strings.TrimSpace(string(testenv.ImageFile(t, s.Reg, repo, tag, "beta.sha256"))); got != hex.EncodeToString(betaSum[:]) {
		t.Fatalf("/beta.sha256 = %q: the second secret did not reach its step", got)
	}

	// The stored async result, fetched as a platform would after a lost callback.
	req, _ := http.NewRequest(http.MethodGet, b.url+"/results/"+callID, nil)
	req.Header.Set("X-Build-Signature", testenv.Sign(b.keys.payload, []byte(callID)))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(stored), "alpha is "+secrets.Mask) {
		t.Fatalf("GET /results/%s = %d %s", callID, res.StatusCode, stored)
	}
	b.workDirEmpty(t)
	encodedRedacted(t, alpha, streamed, string(stored))

	// Control: the scan does reach buildkitd's snapshots, where the
	// image's own files (here the hash) live.
	if hits := testenv.FindInTree(t, s.BK.Dir, []byte(hex.EncodeToString(betaSum[:]))); len(hits) == 0 {
		t.Fatal("control failed: the scan of buildkitd's directory does not find the hash the build wrote")
	}

	trees := map[string]string{
		"build-fn work_dir":              b.workDir,
		"build-fn results_dir":           b.resultsDir,
		"buildkitd (state, config, log)": s.BK.Dir,
		"registry storage":               s.Reg.Root,
		"registry log":                   s.Reg.LogPath,
	}
	for name, plain := range map[string]string{"alpha (printed)": alpha, "beta (hashed)": beta} {
		needle := []byte(plain)
		for where, root := range trees {
			if hits := testenv.FindInTree(t, root, needle); len(hits) > 0 {
				t.Errorf("secret %s in %s: %v", name, where, hits)
			}
		}
		if hits := testenv.FindInImage(t, s.Reg, repo, tag, needle); len(hits) > 0 {
			t.Errorf("secret %s in the image: %v", name, hits)
		}
		for where, text := range map[string]string{
			"the streamed log":         streamed,
			"the final line":           fin.Error + fin.Image,
			"the stored result":        string(stored),
			"build-fn's own log":       logs.String(),
			"the image config/history": string(testenv.ImageConfig(t, s.Reg, repo, tag)),
		} {
			if strings.Contains(text, plain) {
				t.Errorf("secret %s in %s", name, where)
			}
		}
	}
}

// encodedRedacted checks the step that printed secret as base64 (alone,
// with echo's newline, inside "ci:<secret>") and as xxd -p hex: each of
// its output lines is masked, and no 12 characters of those encodings
// appear anywhere in the texts.
func encodedRedacted(t *testing.T, secret, streamed string, texts ...string) {
	t.Helper()
	printed, inside := 0, false
	for _, line := range strings.Split(streamed, "\n") {
		// "<time> <output>", or "l: <time> <output>" in the prefixed form.
		_, output, _ := strings.Cut(strings.TrimPrefix(line, "l: "), " ")
		switch {
		case output == "encoded-start":
			inside = true
		case output == "encoded-end":
			inside = false
		case inside:
			printed++
			if !strings.Contains(line, secrets.Mask) {
				t.Errorf("an encoded secret line is not redacted: %q", line)
			}
		}
	}
	// base64, xxd -p (two lines), echo | base64, "ci:" | base64.
	if printed != 5 {
		t.Fatalf("%d encoded lines between the markers, want 5:\n%s", printed, streamed)
	}
	embedded := base64.StdEncoding.EncodeToString([]byte("ci:" + secret))
	forms := []string{
		base64.StdEncoding.EncodeToString([]byte(secret)),
		base64.StdEncoding.EncodeToString([]byte(secret + "\n")),
		hex.EncodeToString([]byte(secret)),
		embedded[4 : 8*(3+len(secret))/6], // the characters "ci:" does not touch
	}
	for _, text := range append(texts, streamed) {
		for _, form := range forms {
			for i := 0; i+12 <= len(form); i++ {
				if strings.Contains(text, form[i:i+12]) {
					t.Errorf("%q, part of an encoding of the secret, is in the log", form[i:i+12])
					break
				}
			}
		}
	}
}
