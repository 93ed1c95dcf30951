package deploy_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/deploy/deploytest"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

var acme = deploytest.Acme

func acmePolicy() deploy.Policy {
	return deploy.Policy{
		Tenant:            acme,
		ReservedSecrets:   []string{"payload-secret", "payload-secret-acme", "build-secrets-key", "registry-config", "basic-auth-password"},
		ReservedFunctions: []string{"build-fn", "deploy-fn"},
		DefaultNamespace:  "openfaas-fn",
	}
}

func TestPolicyCheck(t *testing.T) {
	ok := deploy.Spec{Name: "hello", Image: "registry.example.com/acme/hello:1"}
	for _, tc := range []struct {
		name   string
		change func(*deploy.Spec)
		refuse string // part of the error, "" for allowed
	}{
		{"own image, default namespace", func(*deploy.Spec) {}, ""},
		{"own namespace", func(s *deploy.Spec) { s.Namespace = "acme-fn" }, ""},
		{"own secrets", func(s *deploy.Spec) { s.Secrets = []string{"acme-db", "shared-db"} }, ""},
		{"foreign namespace", func(s *deploy.Spec) { s.Namespace = "other-fn" }, `namespace "other-fn"`},
		{"the gateway's namespace", func(s *deploy.Spec) { s.Namespace = "openfaas" }, `namespace "openfaas"`},
		{"foreign secret", func(s *deploy.Spec) { s.Secrets = []string{"acme-db", "other-db"} }, `secret "other-db"`},
		{"pattern is a prefix, not a substring", func(s *deploy.Spec) { s.Secrets = []string{"x-acme-db"} }, `secret "x-acme-db"`},
		{"exact name is exact", func(s *deploy.Spec) { s.Secrets = []string{"shared-db2"} }, `secret "shared-db2"`},
		{"the builder's HMAC key", func(s *deploy.Spec) { s.Secrets = []string{"payload-secret"} }, "belongs to the builder"},
		{"its own HMAC key, though acme-* would not match it", func(s *deploy.Spec) { s.Secrets = []string{"payload-secret-acme"} }, "belongs to the builder"},
		{"the private key", func(s *deploy.Spec) { s.Secrets = []string{"build-secrets-key"} }, "belongs to the builder"},
		{"the builder's function", func(s *deploy.Spec) { s.Name = "build-fn" }, "builder's own functions"},
		{"another tenant's image", func(s *deploy.Spec) { s.Image = "registry.example.com/other/hello:1" }, "may not deploy image"},
		{"a base image is pullable, not deployable", func(s *deploy.Spec) { s.Image = "registry.example.com/library/busybox" }, "may not deploy image"},
	} {
		spec := ok
		tc.change(&spec)
		err := acmePolicy().Check(spec)
		var pe *deploy.PolicyError
		switch {
		case tc.refuse == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.refuse != "" && (!errors.As(err, &pe) || !strings.Contains(err.Error(), tc.refuse)):
			t.Errorf("%s: error %v, want a PolicyError naming %s", tc.name, err, tc.refuse)
		}
	}
}

// A reserved secret stays reserved for a tenant that may mount anything.
func TestPolicyReservedForTheImplicitTenant(t *testing.T) {
	p := deploy.Policy{Tenant: tenant.Implicit("payload-secret"), ReservedSecrets: []string{"payload-secret"}, ReservedFunctions: []string{"build-fn"}}
	if err := p.Check(deploy.Spec{Name: "x", Image: "any/image", Namespace: "anywhere", Secrets: []string{"any"}}); err != nil {
		t.Fatalf("unrestricted tenant refused: %v", err)
	}
	if err := p.Check(deploy.Spec{Name: "x", Image: "any/image", Secrets: []string{"payload-secret"}}); err == nil {
		t.Error("the implicit tenant may mount the payload secret")
	}
	if err := p.Check(deploy.Spec{Name: "build-fn", Image: "any/image"}); err == nil {
		t.Error("the implicit tenant may deploy over build-fn")
	}
}

func TestApplyRefusesAnotherTenantsFunction(t *testing.T) {
	spec := deploy.Spec{Name: "hello", Image: "registry.example.com/acme/hello:1"}
	for _, tc := range []struct {
		name  string
		owner string
		ok    bool
	}{
		{"own function", "acme", true},
		{"another tenant's", "other", false},
		{"no owner label (the operator's, or deployed by hand)", "", false},
	} {
		gw := &deploytest.Gateway{Functions: []types.FunctionStatus{deploytest.Owned("hello", deploy.OwnerLabel, tc.owner)}}
		_, err := deploy.Apply(context.Background(), gw, acmePolicy(), spec)
		u, d := gw.Calls()
		if tc.ok {
			if err != nil || u != 1 {
				t.Errorf("%s: %v, %d updates", tc.name, err, u)
			}
			continue
		}
		var pe *deploy.PolicyError
		if !errors.As(err, &pe) || u+d != 0 {
			t.Errorf("%s: error %v and %d updates, %d deploys; want a PolicyError and nothing sent", tc.name, err, u, d)
		}
	}
}

// A spec cannot pass itself off as another tenant's.
func TestApplyLabelsTheOwner(t *testing.T) {
	gw := &deploytest.Gateway{}
	spec := deploy.Spec{Name: "hello", Image: "registry.example.com/acme/hello:1", Labels: map[string]string{deploy.OwnerLabel: "other", "team": "a"}}
	if _, err := deploy.Apply(context.Background(), gw, acmePolicy(), spec); err != nil {
		t.Fatal(err)
	}
	labels := *gw.Updates()[0].Labels
	if labels[deploy.OwnerLabel] != "acme" || labels["team"] != "a" {
		t.Fatalf("labels sent %v", labels)
	}
	if spec.Labels[deploy.OwnerLabel] != "other" {
		t.Error("Apply changed the caller's map")
	}
}
