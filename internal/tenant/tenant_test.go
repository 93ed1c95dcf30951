package tenant

import (
	"errors"
	"testing"
)

func TestMayPush(t *testing.T) {
	acme := Tenant{Name: "acme", Images: []string{"registry.example.com/acme/", "docker.io/acme/", "ghcr.io/x/only:"}}
	for image, want := range map[string]bool{
		"registry.example.com/acme/fn:1":          true,
		"registry.example.com/acme/team/fn":       true,
		"acme/fn":                                 true, // docker.io/acme/fn:latest
		"ghcr.io/x/only:v2":                       true,
		"ghcr.io/x/only-not":                      false,
		"registry.example.com/acme-evil/fn":       false,
		"registry.example.com/other/fn":           false,
		"registry.example.com/acme/../other/fn":   false,
		"registry.example.com/acme/Upper":         false,
		"registry.example.com.evil.io/acme/fn":    false,
		"":                                        false,
		"registry.example.com/acme/fn@sha256:bad": false,
	} {
		if got := acme.MayPush(image); got != want {
			t.Errorf("MayPush(%q) = %v, want %v", image, got, want)
		}
	}
	if !Implicit("payload-secret").MayPush("anything/at:all") {
		t.Error("the implicit tenant may not push")
	}
}

func TestMayMountAndDeploy(t *testing.T) {
	acme := Tenant{Secrets: []string{"acme-*", "shared"}, Namespaces: []string{"openfaas-fn"}}
	for secret, want := range map[string]bool{"acme-db": true, "acme-": true, "shared": true, "shared2": false, "xacme-db": false, "": false} {
		if got := acme.MayMount(secret); got != want {
			t.Errorf("MayMount(%q) = %v, want %v", secret, got, want)
		}
	}
	if !acme.MayDeployTo("openfaas-fn") || acme.MayDeployTo("openfaas") || acme.MayDeployTo("") {
		t.Error("MayDeployTo")
	}
	if acme.Pullable() == nil || Implicit("k").Pullable() != nil {
		t.Error("Pullable: restricted tenants list prefixes, the implicit one nothing (all)")
	}
}

func TestDirectoryCandidates(t *testing.T) {
	keys := map[string]string{"ka": " a-key\n", "kb": "b-key", "kc": ""}
	d := NewDirectory([]Tenant{{Name: "a", PayloadSecret: "ka"}, {Name: "b", PayloadSecret: "kb"}, {Name: "c", PayloadSecret: "kc"}},
		func(s string) ([]byte, error) {
			if s == "kc" {
				return nil, errors.New("not mounted")
			}
			return []byte(keys[s]), nil
		})
	tenants, got, err := d.Candidates("")
	// c's secret is missing: the others still work.
	if err != nil || len(tenants) != 2 || tenants[0].Name != "a" || string(got[0]) != "a-key" || string(got[1]) != "b-key" {
		t.Fatalf("Candidates = %v %q %v", tenants, got, err)
	}
	if tenants, got, err := d.Candidates("b"); err != nil || len(tenants) != 1 || string(got[0]) != "b-key" {
		t.Fatalf("Candidates(b) = %v %q %v", tenants, got, err)
	}
	if _, _, err := d.Candidates("z"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Candidates(z): %v", err)
	}
	if _, _, err := d.Candidates("c"); err == nil || errors.Is(err, ErrUnknown) {
		t.Fatalf("Candidates(c) with its secret missing: %v", err)
	}
}
