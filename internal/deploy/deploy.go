// Package deploy creates or updates a function through the OpenFaaS
// gateway's REST API with go-sdk. Create-or-update is idempotent: an update
// is tried first and a 404 turns it into a create.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"

	"github.com/openfaas/faas-provider/types"
)

// Spec is what a caller asks to deploy. It mirrors the gateway's
// FunctionDeployment with plain field names.
type Spec struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Namespace   string            `json:"namespace,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	EnvProcess  string            `json:"envProcess,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Secrets     []string          `json:"secrets,omitempty"`
	Constraints []string          `json:"constraints,omitempty"`
	Limits      *Resources        `json:"limits,omitempty"`
	Requests    *Resources        `json:"requests,omitempty"`
	// ReadOnlyRootFilesystem is passed through to the provider.
	ReadOnlyRootFilesystem bool `json:"readOnlyRootFilesystem,omitempty"`
}

// Resources are Kubernetes-style quantities, e.g. "128Mi", "500m".
type Resources struct {
	Memory string `json:"memory,omitempty"`
	CPU    string `json:"cpu,omitempty"`
}

// dnsLabel is what every provider accepts as a function name.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Validate rejects what the gateway would reject, with a clearer message.
func (s Spec) Validate() error {
	if !dnsLabel.MatchString(s.Name) {
		return fmt.Errorf("function name %q must be a DNS label: lowercase letters, digits and '-', at most 63 characters", s.Name)
	}
	if s.Image == "" {
		return errors.New("image is required")
	}
	if s.Namespace != "" && !dnsLabel.MatchString(s.Namespace) {
		return fmt.Errorf("namespace %q is not a DNS label", s.Namespace)
	}
	return nil
}

func (s Spec) deployment() types.FunctionDeployment {
	d := types.FunctionDeployment{
		Service:                s.Name,
		Image:                  s.Image,
		Namespace:              s.Namespace,
		EnvProcess:             s.EnvProcess,
		EnvVars:                s.Env,
		Constraints:            s.Constraints,
		Secrets:                s.Secrets,
		ReadOnlyRootFilesystem: s.ReadOnlyRootFilesystem,
	}
	if len(s.Labels) > 0 {
		d.Labels = &s.Labels
	}
	if len(s.Annotations) > 0 {
		d.Annotations = &s.Annotations
	}
	if s.Limits != nil {
		d.Limits = &types.FunctionResources{Memory: s.Limits.Memory, CPU: s.Limits.CPU}
	}
	if s.Requests != nil {
		d.Requests = &types.FunctionResources{Memory: s.Requests.Memory, CPU: s.Requests.CPU}
	}
	return d
}

// Gateway is the part of go-sdk's *sdk.Client a deployment needs.
type Gateway interface {
	Deploy(ctx context.Context, spec types.FunctionDeployment) (int, error)
	Update(ctx context.Context, spec types.FunctionDeployment) (int, error)
	GetFunctions(ctx context.Context, namespace string) ([]types.FunctionStatus, error)
}

// Result says what happened.
type Result struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Image     string `json:"image"`
	// Action is "created" or "updated".
	Action string `json:"action"`
}

// GatewayError is a refusal or failure reported by the gateway.
type GatewayError struct {
	Status int
	Err    error
}

func (e *GatewayError) Error() string {
	return fmt.Sprintf("gateway answered %d: %v", e.Status, e.Err)
}

func (e *GatewayError) Unwrap() error { return e.Err }

// Transient reports whether retrying may help: the gateway or the
// provider behind it is down, restarting or overloaded.
func (e *GatewayError) Transient() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// Apply creates the function, or updates it if it exists, for the
// policy's tenant: a spec outside the policy, or a function another tenant
// owns, is refused before anything is deployed.
func Apply(ctx context.Context, gw Gateway, p Policy, spec Spec) (Result, error) {
	if err := spec.Validate(); err != nil {
		return Result{}, err
	}
	if err := p.Check(spec); err != nil {
		return Result{}, err
	}
	if err := p.CheckOwner(ctx, gw, spec); err != nil {
		return Result{}, err
	}
	spec = p.owned(spec)
	action, err := CreateOrUpdate(ctx, gw, spec.deployment())
	if err != nil {
		return Result{}, err
	}
	return Result{Name: spec.Name, Namespace: spec.Namespace, Image: spec.Image, Action: action}, nil
}

// CreateOrUpdate tries an update first and turns a 404 into a create, with
// no policy: the builder's own functions (the local stack's) are nobody's
// tenant's. It returns "created" or "updated", or a *GatewayError.
func CreateOrUpdate(ctx context.Context, gw Gateway, d types.FunctionDeployment) (string, error) {
	action := "updated"
	status, err := gw.Update(ctx, d)
	if status == http.StatusNotFound {
		action = "created"
		status, err = gw.Deploy(ctx, d)
	}
	if err != nil {
		return "", &GatewayError{Status: status, Err: err}
	}
	return action, nil
}

// Find is a function's status in namespace; found is false when it does
// not exist.
func Find(ctx context.Context, gw Gateway, namespace, name string) (_ types.FunctionStatus, found bool, _ error) {
	fns, err := gw.GetFunctions(ctx, namespace)
	if err != nil {
		return types.FunctionStatus{}, false, fmt.Errorf("list functions: %w", err)
	}
	for _, f := range fns {
		if f.Name == name {
			return f, true, nil
		}
	}
	return types.FunctionStatus{}, false, nil
}
