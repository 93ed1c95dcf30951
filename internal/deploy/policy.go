package deploy

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// OwnerLabel marks each function fnbuilder deploys with the tenant that
// deployed it; a tenant may update only its own functions.
const OwnerLabel = "com.openfaas.fnbuilder.tenant"

// Policy is what one tenant may deploy. The reserved names hold whatever
// the tenant's own patterns say: they are the builder itself.
type Policy struct {
	Tenant tenant.Tenant
	// ReservedSecrets are the builder's own secrets (payload secrets,
	// private keys, registry and gateway credentials).
	ReservedSecrets []string
	// ReservedFunctions are the builder's own functions.
	ReservedFunctions []string
	// DefaultNamespace is where a spec without a namespace goes.
	DefaultNamespace string
}

// PolicyError is a deploy the tenant may not make (HTTP 400).
type PolicyError struct{ Reason string }

func (e *PolicyError) Error() string { return "deploy refused: " + e.Reason }

// Check refuses a spec outside the policy; it asks the gateway nothing.
func (p Policy) Check(spec Spec) error {
	t := p.Tenant
	if slices.Contains(p.ReservedFunctions, spec.Name) {
		return &PolicyError{fmt.Sprintf("%q is one of the builder's own functions", spec.Name)}
	}
	if ns := p.namespace(spec); !t.MayDeployTo(ns) {
		return &PolicyError{fmt.Sprintf("tenant %s may not deploy into namespace %q", t.Name, ns)}
	}
	for _, s := range spec.Secrets {
		if slices.Contains(p.ReservedSecrets, s) {
			return &PolicyError{fmt.Sprintf("secret %q belongs to the builder", s)}
		}
		if !t.MayMount(s) {
			return &PolicyError{fmt.Sprintf("tenant %s may not mount secret %q", t.Name, s)}
		}
	}
	if !t.MayPush(spec.Image) {
		return &PolicyError{fmt.Sprintf("tenant %s may not deploy image %q", t.Name, spec.Image)}
	}
	return nil
}

func (p Policy) namespace(spec Spec) string {
	if spec.Namespace != "" {
		return spec.Namespace
	}
	return p.DefaultNamespace
}

// CheckOwner refuses to touch a function that exists and was not
// deployed by this tenant: one whose owner label names another tenant,
// or that has none (the operator's own, or deployed by other means).
func (p Policy) CheckOwner(ctx context.Context, gw Gateway, spec Spec) error {
	fn, found, err := Find(ctx, gw, p.namespace(spec), spec.Name)
	if err != nil {
		return &GatewayError{Status: http.StatusBadGateway, Err: err}
	}
	var owner string
	if found && fn.Labels != nil {
		owner = (*fn.Labels)[OwnerLabel]
	}
	if found && owner != p.Tenant.Name {
		return &PolicyError{fmt.Sprintf("function %q already exists and does not belong to tenant %s", spec.Name, p.Tenant.Name)}
	}
	return nil
}

// owned is spec labelled with the tenant that deploys it; a label the
// spec set itself is overwritten.
func (p Policy) owned(spec Spec) Spec {
	spec.Labels = maps.Clone(spec.Labels)
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels[OwnerLabel] = p.Tenant.Name
	return spec
}
