package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/deploy/deploytest"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
)

var acme = deploytest.Acme

const acmeImage = "registry.example.com/acme/hello:1"

// Everything a tenant may not ask for is refused before anything is built
// or deployed, with a message that names it.
func TestPrepareRefusesWhatTheTenantMayNotDo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     map[string]any
		message string
	}{
		{"BUILDKIT_SYNTAX", map[string]any{"image": acmeImage, "buildArgs": map[string]string{"BUILDKIT_SYNTAX": "registry.example.com/other/frontend"}}, "BUILDKIT_SYNTAX is reserved"},
		{"any case", map[string]any{"image": acmeImage, "buildArgs": map[string]string{"buildkit_cache_mount_ns": "other"}}, "buildkit_cache_mount_ns is reserved"},
		{"arg name with =", map[string]any{"image": acmeImage, "buildArgs": map[string]string{"A=B": "x"}}, "not valid"},
		{"empty arg name", map[string]any{"image": acmeImage, "buildArgs": map[string]string{"": "x"}}, "not valid"},
		{"another tenant's image", map[string]any{"image": "registry.example.com/other/hello:1"}, "not one tenant acme may push"},
		{"a prefix look-alike", map[string]any{"image": "registry.example.com/acme-evil/hello:1"}, "not one tenant acme may push"},
		{"a path trick", map[string]any{"image": "registry.example.com/acme/../other/hello"}, "not one tenant acme may push"},
		{"a shared base image", map[string]any{"image": "registry.example.com/library/busybox:latest"}, "not one tenant acme may push"},
		{"deploy into another namespace", map[string]any{"image": acmeImage, "deploy": map[string]any{"name": "hello", "namespace": "openfaas"}}, `namespace "openfaas"`},
		{"deploy with the HMAC key", map[string]any{"image": acmeImage, "deploy": map[string]any{"name": "hello", "secrets": []string{"payload-secret-acme"}}}, "belongs to the builder"},
		{"deploy with another's secret", map[string]any{"image": acmeImage, "deploy": map[string]any{"name": "hello", "secrets": []string{"other-db"}}}, `secret "other-db"`},
		{"deploy over build-fn", map[string]any{"image": acmeImage, "deploy": map[string]any{"name": "build-fn"}}, "builder's own"},
		{"deploy over another tenant's function", map[string]any{"image": acmeImage, "deploy": map[string]any{"name": "taken"}}, "does not belong to tenant acme"},
		{"deploy over an unlabelled function", map[string]any{"image": acmeImage, "deploy": map[string]any{"name": "unlabelled"}}, "does not belong to tenant acme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := &deploytest.Gateway{Functions: []types.FunctionStatus{
				deploytest.Owned("taken", deploy.OwnerLabel, "other"),
				deploytest.Owned("unlabelled", deploy.OwnerLabel, ""),
			}}
			p := tenantPipeline(t, gw)
			job, err := p.Prepare(context.Background(), bytes.NewReader(buildTar(t, tc.cfg)), nil, acme)
			var in *pipeline.InputError
			if job != nil || !errors.As(err, &in) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("Prepare = %v, %v; want an InputError naming %q", job, err, tc.message)
			}
			if u, d := gw.Calls(); u+d != 0 {
				t.Fatalf("the gateway got %d updates and %d deploys", u, d)
			}
			if r := p.Runner.(*flakyRunner); r.calls != 0 {
				t.Fatal("something was built")
			}
		})
	}
}

// The twin: what the tenant may do goes through, and the build carries
// the tenant so BuildKit keeps its caches and pulls apart.
func TestPrepareAllowsWhatTheTenantMayDo(t *testing.T) {
	gw := &deploytest.Gateway{Functions: []types.FunctionStatus{deploytest.Owned("hello", deploy.OwnerLabel, "acme")}, UpdateCodes: []int{http.StatusOK}}
	p := tenantPipeline(t, gw)
	job, err := p.Prepare(context.Background(), bytes.NewReader(buildTar(t, map[string]any{
		"image":     acmeImage,
		"buildArgs": map[string]string{"GO_VERSION": "1.26", "SOURCE_DATE_EPOCH": "0"},
		"deploy":    map[string]any{"name": "hello", "secrets": []string{"acme-db"}},
	})), nil, acme)
	if err != nil {
		t.Fatal(err)
	}
	defer job.Close()
	if err := job.Run(context.Background(), func([]string) {}); err != nil {
		t.Fatal(err)
	}
	built := p.Runner.(*flakyRunner).last
	if built.Tenant != "acme" || !reflect.DeepEqual(built.Pulls, acme.Pullable()) {
		t.Fatalf("the build ran as tenant %q pulling %q", built.Tenant, built.Pulls)
	}
	res, err := job.Deploy(context.Background(), func([]string) {})
	if err != nil || res.Action != "updated" {
		t.Fatalf("Deploy = %+v, %v", res, err)
	}
	if labels := *gw.Updates()[0].Labels; labels[deploy.OwnerLabel] != "acme" {
		t.Fatalf("deployed with labels %v", labels)
	}
}

func tenantPipeline(t *testing.T, gw deploy.Gateway) *pipeline.Pipeline {
	p := newPipeline(t, gw)
	p.Deploy = deploy.Policy{
		ReservedSecrets:   []string{"payload-secret-acme", "build-secrets-key"},
		ReservedFunctions: []string{"build-fn", "deploy-fn"},
		DefaultNamespace:  "openfaas-fn",
	}
	return p
}
