package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	sdk "github.com/openfaas/go-sdk"
	"github.com/openfaas/go-sdk/builder"
	"golang.org/x/term"

	"github.com/fnbuilder/fnbuilder/internal/buildtar"
	"github.com/fnbuilder/fnbuilder/internal/callback"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/signature"
)

// The example's build secret: its Dockerfile mounts it with
// RUN --mount=type=secret,id=greeting_key.
const demoSecretName = "greeting_key"

// maxAsyncTar keeps the queued request under NATS' 1 MB message limit.
const maxAsyncTar = 700 << 10

type demoOptions struct {
	example    string
	name       string
	secretFile string
	timeout    time.Duration
}

func (o *demoOptions) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.example, "example", "", "function source with a Dockerfile (default REPO/examples/hello-secret)")
	fs.StringVar(&o.name, "name", "hello-secret", "function name to deploy")
	fs.StringVar(&o.secretFile, "secret-file", "", "file whose bytes are the build secret "+demoSecretName+" (default: random for this run)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "longest wait for the build's callback")
}

// Demo is the main job, through the gateway as a platform would do it:
// seal a build secret with publickey-fn's key, submit the signed tar to
// /async-function/build-fn with an X-Callback-Url, wait for the callback,
// deploy the image with deploy-fn, invoke the new function and print its
// answer, which carries a fingerprint of the secret.
func (s *Stack) Demo(o demoOptions) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout+5*time.Minute)
	defer cancel()
	abs, err := filepath.Abs(o.example)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(abs, "Dockerfile")); err != nil {
		return fmt.Errorf("example %s: %v", abs, err)
	}
	fmt.Fprintf(s.out, "fnbuilder demo: %s → build, push, deploy and invoke through the gateway %s\n\n", abs, gatewayURL)

	// 0. Every piece answers, or the demo says which one does not.
	g, err := s.preflight(ctx)
	if err != nil {
		return err
	}

	// 1. The builder's public key, from publickey-fn.
	code, body, _, err := invoke(ctx, http.MethodGet, "/function/publickey-fn", nil, nil)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("publickey-fn (GET %s/function/publickey-fn): %d %s %v\n  its log: %s", gatewayURL, code, strings.TrimSpace(string(body)), err, s.functionLog("publickey-fn"))
	}
	pub, err := secrets.DecodePublicKey(body)
	if err != nil {
		return fmt.Errorf("publickey-fn answered something that is not a public key: %v: %s", err, body)
	}
	keyID, _ := secrets.KeyID(pub)
	s.step(1, "public key from publickey-fn: key_id %s (nacl/box)", keyID)

	// 2. The build secret, sealed into the build tar.
	secret, origin, err := demoSecret(o.secretFile)
	if err != nil {
		return err
	}
	fingerprint := secretFingerprint(secret)
	buildID := time.Now().UTC().Format("20060102-150405") + "-" + randomHex(3)
	image := fmt.Sprintf("%s/examples/%s:%s", registryAddr, o.name, buildID)
	if err := os.MkdirAll(s.path("demo"), 0o700); err != nil {
		return err
	}
	work, err := os.MkdirTemp(s.path("demo"), "build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tarPath := filepath.Join(work, "req.tar")
	if err := builder.MakeTar(tarPath, abs, &builder.BuildConfig{
		Image: image,
		// A fresh BUILD_ID per run: BuildKit's cache does not key on
		// secret values, so this makes the RUN that reads the secret run.
		BuildArgs: map[string]string{"BUILD_ID": buildID},
	}); err != nil {
		return fmt.Errorf("make the build tar: %w", err)
	}
	tarBytes, err := os.ReadFile(tarPath)
	if err != nil {
		return err
	}
	sealed, err := secrets.Seal(pub, map[string][]byte{demoSecretName: secret})
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if tarBytes, err = buildtar.AppendSecrets(tarBytes, sealed); err != nil {
		return err
	}
	// The gateway queues the body base64-encoded in one NATS message, whose
	// default limit is 1 MB: a bigger request would never reach build-fn.
	if len(tarBytes) > maxAsyncTar {
		return fmt.Errorf("the build tar of %s is %d bytes: too big for an async request (NATS Streaming's 1 MB message limit, body base64-encoded); build it through build-fn's root http://%s/build instead", abs, len(tarBytes), builderAddr)
	}
	payload, err := s.readSecret("payload-secret")
	if err != nil {
		return err
	}
	key := signature.Key(payload)
	s.step(2, "sealed build secret %s (%s; sha256[:16] %s) into a %d-byte signed tar for %s", demoSecretName, origin, fingerprint, len(tarBytes), image)

	// 3. Submitted asynchronously, with a callback receiver on loopback
	// (the queue-workers run on this host).
	cb, err := callback.Listen()
	if err != nil {
		return err
	}
	defer cb.Close()
	submitted := time.Now()
	qwOffsets := s.logOffsets("queue-worker-1", "queue-worker-2")
	hdr := http.Header{}
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("X-Build-Signature", signature.Sign(tarBytes, key))
	hdr.Set("X-Callback-Url", cb.URL)
	code, body, respHdr, err := invoke(ctx, http.MethodPost, "/async-function/build-fn", tarBytes, hdr)
	if err != nil {
		return fmt.Errorf("gateway: POST /async-function/build-fn: %v\n  gateway log: %s", err, s.logPath("gateway"))
	}
	if code != http.StatusAccepted {
		return fmt.Errorf("gateway: POST /async-function/build-fn answered %d (want 202): %s\n  gateway log: %s\n  nats log: %s", code, strings.TrimSpace(string(body)), s.logPath("gateway"), s.logPath("nats"))
	}
	callID := respHdr.Get("X-Call-Id")
	s.step(3, "POST %s/async-function/build-fn → 202 Accepted, X-Call-Id %s\n      callback: %s", gatewayURL, callID, cb.URL)

	// 4. Waiting, with what each piece is doing.
	res, err := s.waitCallback(ctx, cb, callID, key, qwOffsets, o.timeout)
	if err != nil {
		return err
	}
	var result builder.BuildResult
	if err := json.Unmarshal(res.Body, &result); err != nil {
		return fmt.Errorf("build-fn: the callback body is not a build result (X-Function-Status %s): %v\n%.2000s", res.Status(), err, res.Body)
	}
	s.step(4, "callback after %.1fs: X-Function-Status %s, status %s, image %s; build log:", res.At.Sub(submitted).Seconds(), res.Status(), result.Status, result.Image)
	for _, l := range result.Log {
		fmt.Fprintf(s.out, "        %s\n", l)
	}
	if result.Status != builder.BuildSuccess {
		return fmt.Errorf("build-fn: the build failed (X-Function-Status %s, status %q): %s\n  build-fn log: %s\n  buildkitd log: %s",
			res.Status(), result.Status, result.Error, s.functionLog("build-fn"), s.logPath("buildkitd"))
	}

	// 5. Deployed by deploy-fn, with a signed spec.
	spec := deploy.Spec{Name: o.name, Image: result.Image, Labels: map[string]string{"fnbuilder.dev/example": filepath.Base(abs)}}
	specBody, _ := json.Marshal(spec)
	hdr = http.Header{}
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Deploy-Signature", signature.Sign(specBody, key))
	code, body, _, err = invoke(ctx, http.MethodPost, "/function/deploy-fn", specBody, hdr)
	if err != nil || code != http.StatusOK {
		hint := ""
		if strings.Contains(string(body), "does not belong to tenant") {
			// Deployed before fnbuilder had tenants, so it carries no owner.
			hint = fmt.Sprintf("\n  %s has no owner (deployed by an older fnbuilder?): remove it (faas-cli remove %s -g %s) or pass --name", o.name, o.name, gatewayURL)
		}
		return fmt.Errorf("deploy-fn (POST %s/function/deploy-fn): %d %s %v%s\n  deploy-fn log: %s\n  provider log: %s", gatewayURL, code, strings.TrimSpace(string(body)), err, hint, s.functionLog("deploy-fn"), s.logPath("provider"))
	}
	var dres deploy.Result
	_ = json.Unmarshal(body, &dres)
	t5 := time.Now()
	if err := waitReady(ctx, g, o.name, 2*time.Minute); err != nil {
		return fmt.Errorf("provider: %s was deployed but is not ready: %v\n  its log: %s\n  provider log: %s", o.name, err, s.functionLog(o.name), s.logPath("provider"))
	}
	s.step(5, "deploy-fn %s %s; ready after %.1fs", dres.Action, o.name, time.Since(t5).Seconds())

	// 6. Invoked through the gateway.
	var answer []byte
	err = daemon.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		code, body, _, err := invoke(ctx, http.MethodGet, "/function/"+o.name, nil, nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("GET /function/%s: %d %s", o.name, code, strings.TrimSpace(string(body)))
		}
		answer = body
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s does not answer through the gateway: %v\n  its log: %s", o.name, err, s.functionLog(o.name))
	}
	s.step(6, "GET %s/function/%s answers:\n", gatewayURL, o.name)
	for _, l := range strings.Split(strings.TrimRight(string(answer), "\n"), "\n") {
		fmt.Fprintf(s.out, "    │ %s\n", l)
	}
	fmt.Fprintln(s.out)
	if !strings.Contains(string(answer), fingerprint) {
		return fmt.Errorf("%s answers, but without the fingerprint of the secret (sha256[:16] %s): the secret did not reach the build as sealed", o.name, fingerprint)
	}
	if !strings.Contains(string(answer), buildID) {
		return fmt.Errorf("%s answers, but not from build %s (an older image?)", o.name, buildID)
	}
	fmt.Fprintf(s.out, "OK: the answer carries sha256(%s)[:16] = %s, so the sealed secret reached build %s.\n", demoSecretName, fingerprint, buildID)
	fmt.Fprintf(s.out, "    Try it: curl %s/function/%s\n", gatewayURL, o.name)
	return nil
}

func (s *Stack) step(n int, format string, args ...any) {
	fmt.Fprintf(s.out, "[%d/6] %s\n", n, fmt.Sprintf(format, args...))
}

func (s *Stack) functionLog(fn string) string {
	return filepath.Join(s.providerState(), "logs", fn+".log")
}

// preflight checks each component, then the functions the demo uses.
func (s *Stack) preflight(ctx context.Context) (*sdk.Client, error) {
	var ok []string
	for _, c := range append(s.daemons(), s.forwardDaemon()) {
		if err := s.group().Check(ctx, c); err != nil {
			return nil, fmt.Errorf("component %s: %v\n  log: %s\n  `make up` starts what is missing", c.Name, err, s.logPath(c.Name))
		}
		ok = append(ok, c.Name)
	}
	g, err := s.gateway()
	if err != nil {
		return nil, err
	}
	for _, fn := range []string{"publickey-fn", "build-fn", "deploy-fn"} {
		st, found, err := deploy.Find(ctx, g, "", fn)
		switch {
		case err != nil:
			return nil, fmt.Errorf("gateway: %v", err)
		case !found:
			return nil, fmt.Errorf("function %s is not deployed: run `make up`", fn)
		case st.AvailableReplicas < 1:
			return nil, fmt.Errorf("function %s is deployed but not ready\n  its log: %s\n  provider log: %s", fn, s.functionLog(fn), s.logPath("provider"))
		}
		ok = append(ok, fn)
	}
	fmt.Fprintf(s.out, "[0/6] all up: %s\n", strings.Join(ok, ", "))
	return g, nil
}

func demoSecret(file string) ([]byte, string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, "", err
		}
		return b, "from " + file, nil
	}
	return []byte("greeting-" + randomHex(18)), "random for this run", nil
}

// secretFingerprint is what the example's build writes into its page:
// the first 16 hex digits of the secret's SHA-256.
func secretFingerprint(secret []byte) string { return sha256Hex(string(secret))[:16] }

// waitCallback waits for the callback of callID, printing what the
// queue-workers and build-fn are doing meanwhile.
func (s *Stack) waitCallback(ctx context.Context, cb *callback.Receiver, callID string, key []byte, qwOffsets map[string]int64, timeout time.Duration) (callback.Callback, error) {
	t0 := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	f, ok := s.out.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd()))
	if tty {
		defer fmt.Fprint(s.out, "\r\033[K") // the spinner's line goes when the wait ends
	}
	lastState, lastPrint := "", time.Time{}
	spinner := `|/-\`
	fmt.Fprintf(s.out, "      waiting for the callback (at most %s):\n", timeout)
	for i := 0; ; i++ {
		state := s.asyncState(ctx, callID, key, qwOffsets)
		elapsed := time.Since(t0).Round(time.Second)
		if tty {
			fmt.Fprintf(s.out, "\r\033[K      %c %4s  %s", spinner[i%len(spinner)], elapsed, state)
		} else if state != lastState || time.Since(lastPrint) >= 5*time.Second {
			fmt.Fprintf(s.out, "      %4s  %s\n", elapsed, state)
			lastPrint = time.Now()
		}
		lastState = state
		select {
		case c := <-cb.C:
			if callID != "" && c.CallID() != "" && c.CallID() != callID {
				continue // not ours
			}
			return c, nil
		case <-deadline.C:
			return callback.Callback{}, fmt.Errorf("no callback within %s; last state: %s\n  queue-worker logs: %s, %s\n  build-fn log: %s\n  gateway log: %s",
				timeout, lastState, s.logPath("queue-worker-1"), s.logPath("queue-worker-2"), s.functionLog("build-fn"), s.logPath("gateway"))
		case <-ctx.Done():
			return callback.Callback{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// asyncState says where an async build is: which queue-worker took it (from
// their logs) and what build-fn says about the call id (GET
// /function/build-fn/results/ID, signed over the id).
func (s *Stack) asyncState(ctx context.Context, callID string, key []byte, qwOffsets map[string]int64) string {
	worker := ""
	for name, off := range qwOffsets {
		if callID != "" && strings.Contains(daemon.Since(s.logPath(name), off), callID) {
			worker = "fnb-qw-" + strings.TrimPrefix(name, "queue-worker-")
		}
	}
	build := ""
	if callID != "" {
		hdr := http.Header{}
		hdr.Set("X-Build-Signature", signature.Sign([]byte(callID), key))
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		code, _, _, err := invoke(cctx, http.MethodGet, "/function/build-fn/results/"+callID, nil, hdr)
		cancel()
		switch {
		case err != nil:
			build = "build-fn: " + err.Error()
		case code == http.StatusAccepted:
			build = "building on build-fn (BuildKit at tcp://" + buildkitTCPAddr + ")"
		case code == http.StatusOK:
			build = "build finished; the queue-worker posts the callback"
		case code == http.StatusNotFound:
			build = ""
		default:
			build = fmt.Sprintf("build-fn results: %d", code)
		}
	}
	switch {
	case worker == "" && build == "":
		return "queued in NATS Streaming, waiting for a queue-worker"
	case worker != "" && build == "":
		return "queue-worker " + worker + " took it, calling build-fn through the gateway"
	case worker != "":
		return build + " (via queue-worker " + worker + ")"
	default:
		return build
	}
}

func (s *Stack) logOffsets(names ...string) map[string]int64 {
	out := map[string]int64{}
	for _, n := range names {
		out[n] = daemon.Size(s.logPath(n))
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
