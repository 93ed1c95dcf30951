// Package pipeline is the pipeline behind build-fn: a verified tar is indexed
// (never unpacked), its sealed secrets are opened in memory, and the build
// runs on BuildKit, which reads the context from the request's own bytes,
// with every log line redacted. It knows nothing of HTTP; it says whose
// fault a refusal is with InputError.
package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/buildtar"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// Runner runs one build on BuildKit; *buildkit.Builder is the real one.
type Runner interface {
	// Run builds and returns the pushed manifest's digest.
	Run(ctx context.Context, b buildkit.Build, logf func([]string)) (digest string, err error)
}

// Pipeline holds what every build needs.
type Pipeline struct {
	// Keys loads the private keys that open sealed secrets.
	Keys   func() (*secrets.KeyRing, error)
	Runner Runner
	Limits buildtar.Limits
	// Gateway deploys images for requests that carry a deploy spec; nil
	// refuses such requests.
	Gateway func() (deploy.Gateway, error)
	// DeployBackoff retries a deploy the gateway failed for a moment.
	DeployBackoff Backoff
	// Deploy is the deploy policy every tenant shares (reserved names,
	// default namespace); each job fills in its tenant.
	Deploy deploy.Policy
}

// InputError is a refusal caused by the request itself (HTTP 4xx).
type InputError struct {
	Err      error
	TooLarge bool
}

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Job is one indexed, ready-to-run build. Close it.
type Job struct {
	tenant   tenant.Tenant
	req      *buildtar.Request
	context  *buildtar.FS
	digest   string
	secrets  map[string][]byte
	redactor *secrets.Redactor
	runner   Runner
	deploy   *deploy.Spec
	policy   deploy.Policy
	gateway  func() (deploy.Gateway, error)
	backoff  Backoff
}

// Body is a verified request tar: a received request body, a fetched
// context, or any bytes.
type Body interface {
	io.ReaderAt
	Size() int64
}

// Intake indexes a request tar while its body is received: it is the
// body's signature.Options.Tee, and then Prepare's intake.
type Intake struct{ ix *buildtar.Indexer }

// Intake starts indexing a body as it arrives; ctx bounds the indexing.
func (p *Pipeline) Intake(ctx context.Context) *Intake {
	return &Intake{ix: buildtar.NewIndexer(ctx, p.Limits)}
}

// Write is given the body's bytes in order; it never fails.
func (in *Intake) Write(b []byte) (int, error) { return in.ix.Write(b) }

// Abandon stops indexing a body that will not be built; after Prepare,
// and on nil, it does nothing.
func (in *Intake) Abandon() {
	if in != nil {
		in.ix.Abandon()
	}
}

// Prepare indexes a verified tar of tenant t, checks what it asks for
// against what t may do, and opens its secrets. When intake is the Intake
// the body was received through, its index is used and the body is not
// read again; nil indexes body here. The job reads the context from body
// while it runs: body must stay open until the job is closed. Nothing is
// written anywhere.
func (p *Pipeline) Prepare(ctx context.Context, body Body, intake *Intake, t tenant.Tenant) (*Job, error) {
	var req *buildtar.Request
	var err error
	if intake != nil {
		req, err = intake.ix.Finish()
	} else {
		req, err = buildtar.Index(ctx, io.NewSectionReader(body, 0, body.Size()), p.Limits)
	}
	if err != nil {
		var te *buildtar.Error
		if errors.As(err, &te) {
			return nil, &InputError{Err: err, TooLarge: te.TooLarge}
		}
		return nil, fmt.Errorf("read build context: %w", err)
	}
	policy := p.Deploy
	policy.Tenant = t
	job := &Job{tenant: t, req: req, context: req.Context.Serve(body), runner: p.Runner, gateway: p.Gateway, backoff: p.DeployBackoff, policy: policy}
	if err := job.prepare(ctx, p); err != nil {
		job.Close()
		return nil, err
	}
	return job, nil
}

func (j *Job) prepare(ctx context.Context, p *Pipeline) error {
	req := j.req
	if err := checkRequest(req.Config, j.tenant); err != nil {
		return &InputError{Err: err}
	}
	if err := j.readDeploySpec(ctx); err != nil {
		return err
	}
	if req.SealedSecrets == nil {
		return nil
	}
	ring, err := p.Keys()
	if err != nil {
		return &InputError{Err: fmt.Errorf("the request carries build secrets, but this builder has no usable private key: %w", err)}
	}
	values, err := ring.Unseal(req.SealedSecrets)
	if err != nil {
		return &InputError{Err: fmt.Errorf("build secrets: %w", err)}
	}
	j.secrets = values
	j.redactor = secrets.NewRedactor(values)
	return nil
}

// readDeploySpec checks the optional deploy spec before anything is built,
// so a bad or forbidden spec costs no build.
func (j *Job) readDeploySpec(ctx context.Context) error {
	raw := j.req.Config.Deploy
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	if j.gateway == nil {
		return &InputError{Err: errors.New("the build config asks for a deploy, but this builder has no gateway configured")}
	}
	spec, err := j.parseDeploySpec(raw)
	if err != nil {
		return &InputError{Err: err}
	}
	if err := j.policy.Check(spec); err != nil {
		return &InputError{Err: err}
	}
	gw, err := j.gateway()
	if err != nil {
		return fmt.Errorf("gateway client: %w", err)
	}
	if err := j.policy.CheckOwner(ctx, gw, spec); err != nil {
		var pe *deploy.PolicyError
		if errors.As(err, &pe) {
			return &InputError{Err: err}
		}
		return err
	}
	j.deploy = &spec
	return nil
}

func (j *Job) parseDeploySpec(raw []byte) (deploy.Spec, error) {
	var spec deploy.Spec
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return spec, fmt.Errorf("%s: deploy: %w", buildtar.ConfigName, err)
	}
	switch {
	case spec.Image == "":
		spec.Image = j.req.Config.Image
	case spec.Image != j.req.Config.Image:
		return spec, fmt.Errorf("%s: deploy.image %q differs from the image being built %q", buildtar.ConfigName, spec.Image, j.req.Config.Image)
	}
	if j.req.Config.SkipPush {
		return spec, fmt.Errorf("%s: deploy needs the image pushed, but skipPush is set", buildtar.ConfigName)
	}
	if err := spec.Validate(); err != nil {
		return spec, fmt.Errorf("%s: deploy: %w", buildtar.ConfigName, err)
	}
	return spec, nil
}

// Image is the reference the request asked for.
func (j *Job) Image() string { return j.req.Config.Image }

// Run builds (and pushes unless the config says skipPush). Every line
// given to logf, and the returned error's text, is redacted.
func (j *Job) Run(ctx context.Context, logf func([]string)) error {
	cfg := j.req.Config
	digest, err := j.runner.Run(ctx, buildkit.Build{
		Context:    j.context,
		Dockerfile: cfg.Dockerfile,
		Image:      cfg.Image,
		BuildArgs:  cfg.BuildArgs,
		Labels:     cfg.Labels,
		Platforms:  cfg.Platforms,
		Target:     cfg.Target,
		Push:       !cfg.SkipPush,
		Secrets:    j.secrets,
		Tenant:     j.tenant.Name,
		Pulls:      j.tenant.Pullable(),
	}, func(lines []string) { logf(j.redactor.Clean(lines)) })
	if err != nil {
		return errors.New(j.redactor.String(err.Error()))
	}
	if !cfg.SkipPush {
		j.digest = digest
	}
	return nil
}

// Digest is the pushed manifest's digest, once Run has pushed it.
func (j *Job) Digest() string { return j.digest }

// DeployError says the image was built and pushed but not deployed.
type DeployError struct{ Err error }

func (e *DeployError) Error() string {
	return "image built and pushed, but the deploy failed: " + e.Err.Error()
}
func (e *DeployError) Unwrap() error { return e.Err }

// Deploy deploys the pushed image when the request asked for it; it
// returns nil, nil otherwise. Failed builds never get here.
func (j *Job) Deploy(ctx context.Context, logf func([]string)) (*deploy.Result, error) {
	if j.deploy == nil {
		return nil, nil
	}
	gw, err := j.gateway()
	if err != nil {
		return nil, &DeployError{Err: err}
	}
	// By digest: a tag that moves between this build's push and the
	// deploy cannot make the function run something else.
	spec := *j.deploy
	if j.digest != "" && !strings.Contains(spec.Image, "@") {
		spec.Image += "@" + j.digest
	}
	var res deploy.Result
	transient := func(err error) bool {
		var gwErr *deploy.GatewayError
		return errors.As(err, &gwErr) && gwErr.Transient()
	}
	err = j.backoff.Do(ctx, "deploy", transient, logf, func() error {
		var err error
		res, err = deploy.Apply(ctx, gw, j.policy, spec)
		return err
	})
	if err != nil {
		return nil, &DeployError{Err: err}
	}
	return &res, nil
}

// Close wipes the secrets from memory. The body stays the caller's.
func (j *Job) Close() {
	for _, v := range j.secrets {
		clear(v)
	}
	j.secrets = nil
}
