package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/buildtar"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/deploy/deploytest"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const image = "registry.example:5000/team/hello:1.0"

// anyone is the implicit tenant of a builder without a tenants file.
var anyone = tenant.Implicit("payload-secret")

// buildTar is a valid build tar whose config is cfg.
func buildTar(t *testing.T, cfg map[string]any) []byte {
	t.Helper()
	return testenv.BuildTar(t, testenv.Dir("context/"), testenv.File("context/Dockerfile", "FROM scratch\n"), testenv.ConfigEntry(t, cfg))
}

func newPipeline(t *testing.T, gw deploy.Gateway) *pipeline.Pipeline {
	t.Helper()
	p := &pipeline.Pipeline{
		Keys:          func() (*secrets.KeyRing, error) { return nil, errors.New("no keys in this test") },
		Runner:        &flakyRunner{},
		Limits:        buildtar.DefaultLimits(),
		DeployBackoff: pipeline.Backoff{Attempts: 3, First: time.Microsecond, Max: time.Microsecond},
	}
	if gw != nil {
		p.Gateway = func() (deploy.Gateway, error) { return gw, nil }
	}
	return p
}

func TestPrepareRejectsBadDeploySpec(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     map[string]any
		noGW    bool
		message string
	}{
		{"invalid name", map[string]any{"image": image, "deploy": map[string]any{"name": "Hello_World"}}, false, "DNS label"},
		{"name too long", map[string]any{"image": image, "deploy": map[string]any{"name": strings.Repeat("a", 64)}}, false, "DNS label"},
		{"missing name", map[string]any{"image": image, "deploy": map[string]any{}}, false, "DNS label"},
		{"bad namespace", map[string]any{"image": image, "deploy": map[string]any{"name": "hello", "namespace": "Open_FaaS"}}, false, "namespace"},
		{"other image", map[string]any{"image": image, "deploy": map[string]any{"name": "hello", "image": "other/image:1"}}, false, "differs"},
		{"skipPush", map[string]any{"image": image, "skipPush": true, "deploy": map[string]any{"name": "hello"}}, false, "skipPush"},
		{"unknown field", map[string]any{"image": image, "deploy": map[string]any{"name": "hello", "replicas": 3}}, false, "unknown field"},
		{"not an object", map[string]any{"image": image, "deploy": "hello"}, false, "deploy"},
		{"no gateway", map[string]any{"image": image, "deploy": map[string]any{"name": "hello"}}, true, "no gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := &deploytest.Gateway{}
			p := newPipeline(t, gw)
			if tc.noGW {
				p.Gateway = nil
			}
			job, err := p.Prepare(context.Background(), bytes.NewReader(buildTar(t, tc.cfg)), nil, anyone)
			var in *pipeline.InputError
			if !errors.As(err, &in) || job != nil {
				t.Fatalf("Prepare = %v, %v; want *InputError", job, err)
			}
			if in.TooLarge {
				t.Fatal("InputError marked TooLarge")
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q does not mention %q", err, tc.message)
			}
			if u, d := gw.Calls(); u+d != 0 {
				t.Fatalf("gateway called %d+%d times", u, d)
			}
		})
	}
}

// runFunc is a Runner.
type runFunc func(context.Context, buildkit.Build, func([]string)) error

func (f runFunc) Run(ctx context.Context, b buildkit.Build, logf func([]string)) (string, error) {
	return "", f(ctx, b, logf)
}

// A body indexed while it is received (Intake) builds exactly like one
// indexed afterwards: BuildKit is given the context served from the body,
// and the request's tenant.
func TestPrepareFromIntake(t *testing.T) {
	body := buildTar(t, map[string]any{"image": image})
	var got buildkit.Build
	var dockerfile []byte
	p := newPipeline(t, nil)
	p.Runner = runFunc(func(_ context.Context, b buildkit.Build, _ func([]string)) error {
		got = b
		var err error
		dockerfile, err = buildkit.ReadFile(b.Context, "Dockerfile", 1<<20)
		return err
	})
	for _, viaIntake := range []bool{true, false} {
		var intake *pipeline.Intake
		if viaIntake {
			intake = p.Intake(context.Background())
			for chunk := range slices.Chunk(body, 700) {
				intake.Write(chunk)
			}
		}
		job, err := p.Prepare(context.Background(), bytes.NewReader(body), intake, anyone)
		if err != nil {
			t.Fatal(err)
		}
		if err := job.Run(context.Background(), func([]string) {}); err != nil {
			t.Fatal(err)
		}
		job.Close()
		if string(dockerfile) != "FROM scratch\n" || got.Image != image || got.Tenant != anyone.Name {
			t.Fatalf("intake %v: Dockerfile %q, build %+v", viaIntake, dockerfile, got)
		}
	}

	bad := buildTar(t, map[string]any{"image": image})
	bad = append(bad[:len(bad)-1024:len(bad)-1024], bytes.Repeat([]byte{0xff}, 1024)...)
	intake := p.Intake(context.Background())
	intake.Write(bad)
	intake.Write(bytes.Repeat([]byte("more bytes after a bad tar do not block"), 1000))
	var in *pipeline.InputError
	if _, err := p.Prepare(context.Background(), bytes.NewReader(bad), intake, anyone); !errors.As(err, &in) {
		t.Fatalf("a bad tar: %v, want *InputError", err)
	}
	abandoned := p.Intake(context.Background())
	abandoned.Write(body[:1000])
	abandoned.Abandon() // returns; nothing waits for the rest
}

func prepare(t *testing.T, p *pipeline.Pipeline, cfg map[string]any) *pipeline.Job {
	t.Helper()
	job, err := p.Prepare(context.Background(), bytes.NewReader(buildTar(t, cfg)), nil, anyone)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	t.Cleanup(job.Close)
	return job
}

func TestDeployCreatesOnUpdate404(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusNotFound}, DeployCodes: []int{http.StatusAccepted}}
	p := newPipeline(t, gw)
	job := prepare(t, p, map[string]any{"image": image, "deploy": map[string]any{
		"name": "hello", "namespace": "openfaas-fn", "labels": map[string]string{"team": "a"},
	}})
	if job.Image() != image {
		t.Fatalf("Image %q", job.Image())
	}
	if err := job.Run(context.Background(), func([]string) {}); err != nil {
		t.Fatal(err)
	}
	res, err := job.Deploy(context.Background(), func([]string) {})
	if err != nil {
		t.Fatal(err)
	}
	// Deployed by digest: the tag may move.
	want := deploy.Result{Name: "hello", Namespace: "openfaas-fn", Image: image + "@" + builtDigest, Action: "created"}
	if res == nil || *res != want {
		t.Fatalf("Deploy = %+v, want %+v", res, want)
	}
	if u, d := gw.Calls(); u != 1 || d != 1 {
		t.Fatalf("gateway: %d updates, %d deploys; want 1, 1", u, d)
	}
	sent := gw.Deploys()[0]
	if sent.Service != "hello" || sent.Image != image+"@"+builtDigest || sent.Namespace != "openfaas-fn" ||
		sent.Labels == nil || (*sent.Labels)["team"] != "a" {
		t.Fatalf("deployment sent: %+v", sent)
	}
	job.Close()
}

func TestDeployUpdates(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	job := prepare(t, newPipeline(t, gw), map[string]any{"image": image, "deploy": map[string]any{"name": "hello", "image": image}})
	res, err := job.Deploy(context.Background(), func([]string) {})
	if err != nil {
		t.Fatal(err)
	}
	if res == nil || res.Action != "updated" || res.Image != image || res.Name != "hello" {
		t.Fatalf("Deploy = %+v", res)
	}
	if u, d := gw.Calls(); u != 1 || d != 0 {
		t.Fatalf("gateway: %d updates, %d deploys; want 1, 0", u, d)
	}
}

func TestDeployRetriesTransientGatewayErrors(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusAccepted}}
	job := prepare(t, newPipeline(t, gw), map[string]any{"image": image, "deploy": map[string]any{"name": "hello"}})
	var lines []string
	res, err := job.Deploy(context.Background(), func(l []string) { lines = append(lines, l...) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != "updated" {
		t.Fatalf("action %q", res.Action)
	}
	if u, _ := gw.Calls(); u != 3 {
		t.Fatalf("%d updates, want 3", u)
	}
	if len(lines) != 2 || !strings.Contains(lines[0], "deploy: transient error, retrying") || !strings.Contains(lines[0], "503") {
		t.Fatalf("retry log %q", lines)
	}
}

// deployFails deploys hello through a gateway whose updates answer code,
// and wants a *DeployError.
func deployFails(t *testing.T, code int) (*deploytest.Gateway, error) {
	t.Helper()
	gw := &deploytest.Gateway{UpdateCodes: []int{code}}
	job := prepare(t, newPipeline(t, gw), map[string]any{"image": image, "deploy": map[string]any{"name": "hello"}})
	res, err := job.Deploy(context.Background(), func([]string) {})
	var de *pipeline.DeployError
	if !errors.As(err, &de) || res != nil {
		t.Fatalf("Deploy = %+v, %v; want *DeployError", res, err)
	}
	return gw, err
}

func TestDeployGivesUpAfterAttempts(t *testing.T) {
	gw, err := deployFails(t, http.StatusBadGateway)
	var gwErr *deploy.GatewayError
	if !errors.As(err, &gwErr) || gwErr.Status != http.StatusBadGateway {
		t.Fatalf("error %v does not carry the gateway's 502", err)
	}
	if u, _ := gw.Calls(); u != 3 {
		t.Fatalf("%d updates, want 3 (Attempts)", u)
	}
}

func TestDeployPermanentGatewayError(t *testing.T) {
	gw, err := deployFails(t, http.StatusBadRequest)
	if !strings.Contains(err.Error(), "deploy failed") || !strings.Contains(err.Error(), "400") {
		t.Fatalf("error %q", err)
	}
	if u, d := gw.Calls(); u != 1 || d != 0 {
		t.Fatalf("gateway: %d updates, %d deploys; want 1, 0 (no retry)", u, d)
	}
}

// The gateway is asked who owns the function before the build: a
// gateway client that cannot be made fails the request then, as the
// server's fault, and builds nothing.
func TestDeployGatewayClientError(t *testing.T) {
	p := newPipeline(t, nil)
	p.Gateway = func() (deploy.Gateway, error) { return nil, errors.New("bad gateway_url") }
	job, err := p.Prepare(context.Background(), bytes.NewReader(buildTar(t, map[string]any{"image": image, "deploy": map[string]any{"name": "hello"}})), nil, anyone)
	var in *pipeline.InputError
	if job != nil || err == nil || errors.As(err, &in) || !strings.Contains(err.Error(), "bad gateway_url") {
		t.Fatalf("Prepare = %v, %v; want a server-side error naming the cause", job, err)
	}
}

func TestNoDeploySpec(t *testing.T) {
	for _, cfg := range []map[string]any{
		{"image": image},
		{"image": image, "deploy": nil},
		{"image": image, "skipPush": true},
	} {
		gw := &deploytest.Gateway{}
		job := prepare(t, newPipeline(t, gw), cfg)
		res, err := job.Deploy(context.Background(), func([]string) {})
		if res != nil || err != nil {
			t.Fatalf("config %v: Deploy = %+v, %v; want nil, nil", cfg, res, err)
		}
		if u, d := gw.Calls(); u+d != 0 {
			t.Fatalf("config %v: gateway called", cfg)
		}
	}
	// Without a deploy spec no gateway is needed at all.
	job := prepare(t, newPipeline(t, nil), map[string]any{"image": image})
	if res, err := job.Deploy(context.Background(), func([]string) {}); res != nil || err != nil {
		t.Fatalf("Deploy without gateway = %+v, %v", res, err)
	}
}
