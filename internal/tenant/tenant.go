// Package tenant says who sent a request and what that sender may do. A
// tenant is whoever holds one payload secret: the key that verifies a
// request's signature names its tenant, and the tenant's allowances decide
// which images it may push and pull, where its builds may deploy and which
// secrets its functions may mount. Without a tenants file there is one
// implicit tenant, unrestricted in those allowances.
package tenant

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fnbuilder/fnbuilder/internal/imageref"
)

// Tenant is one customer of the builder. The yaml keys are the
// tenants_file interface.
type Tenant struct {
	// Name is the key in the tenants file; a DNS label, because it becomes
	// part of cache namespaces, cache tags, labels and result ids.
	Name string `yaml:"-"`
	// PayloadSecret is the OpenFaaS secret holding this tenant's HMAC key.
	PayloadSecret string `yaml:"payload_secret"`
	// Images are image-name prefixes the tenant may push, and pull from
	// registries the builder guards.
	Images []string `yaml:"images"`
	// BaseImages are shared prefixes the tenant may also pull.
	BaseImages []string `yaml:"base_images"`
	// Namespaces are where its builds may deploy.
	Namespaces []string `yaml:"namespaces"`
	// Secrets are the OpenFaaS secrets its functions may mount: names, or
	// prefixes ending in "*".
	Secrets []string `yaml:"secrets"`
	// Unrestricted is the implicit tenant of a builder without a tenants
	// file: any image, namespace and secret, except what no tenant may have.
	Unrestricted bool `yaml:"-"`
}

// ImplicitName names the one tenant of a builder without a tenants file.
const ImplicitName = "default"

// Implicit is that tenant, keyed by the builder's payload secret.
func Implicit(payloadSecret string) Tenant {
	return Tenant{Name: ImplicitName, PayloadSecret: payloadSecret, Unrestricted: true}
}

// MayPush reports whether the tenant may push image.
func (t Tenant) MayPush(image string) bool {
	return t.Unrestricted || hasPrefix(imageref.Normalize(image), t.Images)
}

// Pullable lists the image-name prefixes the tenant may pull from
// registries the builder guards (ones it holds credentials for or serves
// tenants from): its own images and the shared base images. Nil when
// unrestricted.
func (t Tenant) Pullable() []string {
	if t.Unrestricted {
		return nil
	}
	// Never nil here: a tenant with no images may pull none, not all.
	return append(append(make([]string, 0, len(t.Images)+len(t.BaseImages)), t.Images...), t.BaseImages...)
}

// MayDeployTo reports whether the tenant may deploy into namespace.
func (t Tenant) MayDeployTo(namespace string) bool {
	return t.Unrestricted || slices.Contains(t.Namespaces, namespace)
}

// MayMount reports whether the tenant's functions may mount secret.
func (t Tenant) MayMount(secret string) bool {
	if t.Unrestricted {
		return true
	}
	for _, p := range t.Secrets {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(secret, prefix) || p == secret {
			return true
		}
	}
	return false
}

func hasPrefix(s string, prefixes []string) bool {
	if s == "" {
		return false
	}
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// dnsLabel is what a tenant name, a namespace and a secret must look like.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// secretName allows what OpenFaaS secret names allow, plus dots.
var secretName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// Load reads a tenants file. Unknown keys, bad names, two tenants sharing a
// payload secret, and prefixes that would match more than a registry path
// are refused, so that a typo never widens what a tenant may do.
func Load(path string) ([]Tenant, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenants file: %w", err)
	}
	tenants, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("tenants file %s: %w", path, err)
	}
	return tenants, nil
}

// Parse decodes a tenants file's content; see Load.
func Parse(data []byte) ([]Tenant, error) {
	var file struct {
		Tenants map[string]Tenant `yaml:"tenants"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		return nil, err
	}
	if len(file.Tenants) == 0 {
		return nil, errors.New("no tenants")
	}
	var out []Tenant
	secrets := map[string]string{}
	for name, t := range file.Tenants {
		t.Name = name
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("tenant %q: %w", name, err)
		}
		if other, dup := secrets[t.PayloadSecret]; dup {
			return nil, fmt.Errorf("tenants %q and %q share payload secret %q: a key must name one tenant", other, name, t.PayloadSecret)
		}
		secrets[t.PayloadSecret] = name
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (t Tenant) validate() error {
	if !dnsLabel.MatchString(t.Name) {
		return errors.New("name must be a DNS label (lowercase letters, digits, '-')")
	}
	if !secretName.MatchString(t.PayloadSecret) {
		return fmt.Errorf("payload_secret %q is not a secret name", t.PayloadSecret)
	}
	for _, p := range append(slices.Clone(t.Images), t.BaseImages...) {
		// "registry/" at least: a bare host or "" would cover every
		// repository of a registry, a host prefix without "/" others' hosts.
		host, rest, ok := strings.Cut(p, "/")
		if !ok || !strings.ContainsAny(host, ".:") && host != "localhost" {
			return fmt.Errorf("image prefix %q: want the full form, starting with the registry (docker.io/acme/, not acme/)", p)
		}
		if strings.ContainsAny(p, "*@ \t") || rest != "" && !strings.HasSuffix(p, "/") && !strings.HasSuffix(p, ":") {
			return fmt.Errorf("image prefix %q: want a registry path ending in \"/\" (e.g. registry.example.com/acme/) or one image name ending in \":\"", p)
		}
	}
	for _, ns := range t.Namespaces {
		if !dnsLabel.MatchString(ns) {
			return fmt.Errorf("namespace %q is not a DNS label", ns)
		}
	}
	for _, s := range t.Secrets {
		name, _ := strings.CutSuffix(s, "*")
		if name == "" || !secretName.MatchString(strings.TrimRight(name, "-.")) {
			return fmt.Errorf("secret pattern %q: want a secret name, or a non-empty prefix ending in \"*\"", s)
		}
	}
	return nil
}
