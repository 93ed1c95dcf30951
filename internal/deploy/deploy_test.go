package deploy_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/deploy/deploytest"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec deploy.Spec
		ok   bool
	}{
		{"minimal", deploy.Spec{Name: "hello", Image: "r/hello:1"}, true},
		{"digits and dashes", deploy.Spec{Name: "a-1-b2", Image: "x"}, true},
		{"one char", deploy.Spec{Name: "a", Image: "x"}, true},
		{"63 chars", deploy.Spec{Name: strings.Repeat("a", 63), Image: "x"}, true},
		{"namespace", deploy.Spec{Name: "hello", Image: "x", Namespace: "openfaas-fn"}, true},
		{"empty name", deploy.Spec{Image: "x"}, false},
		{"64 chars", deploy.Spec{Name: strings.Repeat("a", 64), Image: "x"}, false},
		{"uppercase", deploy.Spec{Name: "Hello", Image: "x"}, false},
		{"underscore", deploy.Spec{Name: "hello_world", Image: "x"}, false},
		{"dot", deploy.Spec{Name: "hello.world", Image: "x"}, false},
		{"leading dash", deploy.Spec{Name: "-hello", Image: "x"}, false},
		{"trailing dash", deploy.Spec{Name: "hello-", Image: "x"}, false},
		{"slash", deploy.Spec{Name: "a/b", Image: "x"}, false},
		{"newline", deploy.Spec{Name: "hello\n", Image: "x"}, false},
		{"no image", deploy.Spec{Name: "hello"}, false},
		{"bad namespace", deploy.Spec{Name: "hello", Image: "x", Namespace: "Open_FaaS"}, false},
	} {
		err := tc.spec.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate(%+v) = %v, want ok=%v", tc.name, tc.spec, err, tc.ok)
		}
	}
}

// anyone is the implicit tenant of a builder without a tenants file.
var anyone = deploy.Policy{Tenant: tenant.Implicit("payload-secret"), DefaultNamespace: "openfaas-fn"}

func TestApplyUpdates(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusAccepted}}
	res, err := deploy.Apply(context.Background(), gw, anyone, deploy.Spec{Name: "hello", Image: "r/hello:1", Namespace: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	want := deploy.Result{Name: "hello", Namespace: "fn", Image: "r/hello:1", Action: "updated"}
	if res != want {
		t.Fatalf("Apply = %+v, want %+v", res, want)
	}
	if len(gw.Updates()) != 1 || len(gw.Deploys()) != 0 {
		t.Fatalf("%d updates, %d deploys", len(gw.Updates()), len(gw.Deploys()))
	}
}

func TestApplyCreatesOn404(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusNotFound}, DeployCodes: []int{http.StatusAccepted}}
	res, err := deploy.Apply(context.Background(), gw, anyone, deploy.Spec{Name: "hello", Image: "r/hello:1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != "created" {
		t.Fatalf("action %q, want created", res.Action)
	}
	if len(gw.Updates()) != 1 || len(gw.Deploys()) != 1 || !reflect.DeepEqual(gw.Updates()[0], gw.Deploys()[0]) {
		t.Fatalf("updates %+v, deploys %+v", gw.Updates(), gw.Deploys())
	}
}

func TestApplyCreateFails(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusNotFound}, DeployCodes: []int{http.StatusBadRequest}}
	_, err := deploy.Apply(context.Background(), gw, anyone, deploy.Spec{Name: "hello", Image: "r/hello:1"})
	var gwErr *deploy.GatewayError
	if !errors.As(err, &gwErr) || gwErr.Status != http.StatusBadRequest {
		t.Fatalf("error %v, want a GatewayError with the create's 400", err)
	}
}

func TestApplyUpdateFails(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusInternalServerError}}
	_, err := deploy.Apply(context.Background(), gw, anyone, deploy.Spec{Name: "hello", Image: "r/hello:1"})
	var gwErr *deploy.GatewayError
	if !errors.As(err, &gwErr) || gwErr.Status != http.StatusInternalServerError {
		t.Fatalf("error %v, want a GatewayError with 500", err)
	}
	if !strings.Contains(err.Error(), "500") {
		t.Fatalf("error %q does not name the status", err)
	}
	if len(gw.Deploys()) != 0 {
		t.Fatal("a 500 on update turned into a create")
	}
}

func TestApplyValidatesFirst(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	_, err := deploy.Apply(context.Background(), gw, anyone, deploy.Spec{Name: "Bad_Name", Image: "x"})
	var gwErr *deploy.GatewayError
	if err == nil || errors.As(err, &gwErr) {
		t.Fatalf("error %v, want a validation error", err)
	}
	if len(gw.Updates())+len(gw.Deploys()) != 0 {
		t.Fatal("gateway called for an invalid spec")
	}
}

func TestGatewayErrorTransient(t *testing.T) {
	for code, want := range map[int]bool{
		http.StatusTooManyRequests:     true,
		http.StatusInternalServerError: true,
		http.StatusBadGateway:          true,
		http.StatusServiceUnavailable:  true,
		http.StatusGatewayTimeout:      true,
		http.StatusBadRequest:          false,
		http.StatusUnauthorized:        false,
		http.StatusForbidden:           false,
		http.StatusNotFound:            false,
		http.StatusConflict:            false,
	} {
		e := &deploy.GatewayError{Status: code, Err: errors.New("x")}
		if got := e.Transient(); got != want {
			t.Errorf("Transient() for %d = %v, want %v", code, got, want)
		}
	}
	inner := errors.New("inner")
	if !errors.Is(&deploy.GatewayError{Status: 500, Err: inner}, inner) {
		t.Fatal("GatewayError does not unwrap")
	}
}

func TestDeploymentCarriesSpec(t *testing.T) {
	spec := deploy.Spec{
		Name:                   "hello",
		Image:                  "r/hello:1",
		Namespace:              "openfaas-fn",
		Env:                    map[string]string{"MODE": "prod"},
		EnvProcess:             "./handler",
		Labels:                 map[string]string{"com.openfaas.scale.min": "2"},
		Annotations:            map[string]string{"topic": "orders"},
		Secrets:                []string{"db-password"},
		Constraints:            []string{"node.platform.os == linux"},
		Limits:                 &deploy.Resources{Memory: "128Mi", CPU: "500m"},
		Requests:               &deploy.Resources{Memory: "64Mi", CPU: "100m"},
		ReadOnlyRootFilesystem: true,
	}
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	if _, err := deploy.Apply(context.Background(), gw, anyone, spec); err != nil {
		t.Fatal(err)
	}
	if len(gw.Updates()) != 1 {
		t.Fatalf("%d updates", len(gw.Updates()))
	}
	labels := map[string]string{"com.openfaas.scale.min": "2", deploy.OwnerLabel: tenant.ImplicitName}
	annotations := map[string]string{"topic": "orders"}
	want := types.FunctionDeployment{
		Service:                "hello",
		Image:                  "r/hello:1",
		Namespace:              "openfaas-fn",
		EnvProcess:             "./handler",
		EnvVars:                map[string]string{"MODE": "prod"},
		Constraints:            []string{"node.platform.os == linux"},
		Secrets:                []string{"db-password"},
		Labels:                 &labels,
		Annotations:            &annotations,
		Limits:                 &types.FunctionResources{Memory: "128Mi", CPU: "500m"},
		Requests:               &types.FunctionResources{Memory: "64Mi", CPU: "100m"},
		ReadOnlyRootFilesystem: true,
	}
	if got := gw.Updates()[0]; !reflect.DeepEqual(got, want) {
		t.Fatalf("sent\n%+v\nwant\n%+v", got, want)
	}

	// Empty maps and resources are left out, not sent as empty objects;
	// the owner label is always there.
	gw = &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	if _, err := deploy.Apply(context.Background(), gw, anyone, deploy.Spec{Name: "hello", Image: "x"}); err != nil {
		t.Fatal(err)
	}
	if d := gw.Updates()[0]; d.Annotations != nil || d.Limits != nil || d.Requests != nil || !reflect.DeepEqual(*d.Labels, map[string]string{deploy.OwnerLabel: tenant.ImplicitName}) {
		t.Fatalf("minimal spec sent %+v", d)
	}
}

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
