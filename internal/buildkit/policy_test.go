package buildkit

import (
	"regexp"
	"strings"
	"testing"

	spb "github.com/moby/buildkit/sourcepolicy/pb"
)

// decide applies a policy's rules as BuildKit does: the last match wins.
func decide(t *testing.T, p *spb.Policy, image string) bool {
	t.Helper()
	allowed := true
	if p == nil {
		return allowed
	}
	for _, r := range p.Rules {
		if r.Selector.MatchType != spb.MatchType_REGEX {
			t.Fatalf("rule %v is not a regex", r)
		}
		if regexp.MustCompile(r.Selector.Identifier).MatchString("docker-image://" + image) {
			allowed = r.Action == spb.PolicyAction_ALLOW
		}
	}
	return allowed
}

func TestSourcePolicy(t *testing.T) {
	b := New(Daemon{}, Registries{Guarded: []string{"reg.example:5000", "docker.io"}})
	build := Build{Tenant: "acme", Pulls: []string{"reg.example:5000/acme/", "reg.example:5000/library/"}}
	p := b.sourcePolicy(build, "docker.io/docker/dockerfile:1.10")
	for image, want := range map[string]bool{
		"reg.example:5000/acme/fn:1":               true,
		"reg.example:5000/library/busybox:latest":  true,
		"reg.example:5000/bob/fn:1":                false,
		"reg.example:5000/acme-evil/fn:1":          false,
		"docker.io/library/alpine:latest":          false, // guarded: the builder has credentials there
		"docker.io/docker/dockerfile:1.10":         true,  // the allowed frontend
		"docker.io/docker/dockerfile:1.10-evil":    true,  // a prefix: operators list full tags
		"ghcr.io/anyone/anything:1":                true,  // not guarded: public
		"reg.example:5000.evil.io/acme/fn:1":       true,  // another host, not guarded
		"reg.example:5000/acme/fn@sha256:" + hex64: true,
	} {
		if got := decide(t, p, image); got != want {
			t.Errorf("%s: allowed %v, want %v", image, got, want)
		}
	}
	if p := b.sourcePolicy(Build{Tenant: "default"}, ""); p != nil {
		t.Errorf("an unrestricted build got a policy %v", p)
	}
	if p := b.sourcePolicy(Build{Tenant: "none", Pulls: []string{}}, ""); decide(t, p, "reg.example:5000/x/y:1") {
		t.Error("a tenant with no images may pull from a guarded registry")
	}
}

const hex64 = "abababababababababababababababababababababababababababababababab"

// No two tenants, nor two repositories of one, share a context copy, a
// cache mount namespace, a RUN step hostname or a registry cache tag.
func TestCacheKeysArePerTenantAndRepository(t *testing.T) {
	builds := []Build{
		{Tenant: "acme", Image: "reg/acme/fn:1"},
		{Tenant: "bob", Image: "reg/acme/fn:1"},
		{Tenant: "acme", Image: "reg/acme/other:1"},
		{Tenant: "acme", Image: "reg/acme-fn:1"}, // sanitizes like reg/acme/fn
		{Tenant: "acme-reg", Image: "acme/fn:1"}, // "acme-reg" + "acme/fn" reads like "acme" + "reg/acme/fn"
	}
	seen := map[string]string{}
	for _, b := range builds {
		for kind, key := range map[string]string{"shared key": sharedKey(b), "cache tag": cacheTag(b)} {
			if other, dup := seen[kind+key]; dup {
				t.Errorf("%s %q shared by %v and %s", kind, key, b, other)
			}
			seen[kind+key] = b.Tenant + " " + b.Image
		}
	}
	// Tags of one tenant and repository stay the same: the cache is found again.
	if cacheTag(Build{Tenant: "acme", Image: "reg/acme/fn:1"}) != cacheTag(Build{Tenant: "acme", Image: "reg/acme/fn:2"}) {
		t.Error("the cache tag depends on the image tag")
	}
	long := Build{Tenant: "acme", Image: "reg/acme/" + strings.Repeat("x", 300)}
	if tag := cacheTag(long); len(tag) > 128 || !regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`).MatchString(tag) {
		t.Errorf("cache tag %q is not a valid tag", tag)
	}
	if cacheMountNamespace(builds[0]) == cacheMountNamespace(builds[1]) || sandboxHostname(builds[0]) == sandboxHostname(builds[1]) {
		t.Error("two tenants share a cache mount namespace or a RUN hostname")
	}
}

// A frontend image is followed only when the operator allows it; the
// built-in frontend builds every other Dockerfile, and says so.
func TestFrontendImage(t *testing.T) {
	dir := t.TempDir()
	b := New(Daemon{}, Registries{Frontends: []string{"docker.io/docker/dockerfile:1.10"}})
	build := Build{Context: Dir(dir), Tenant: "acme"}
	for dockerfile, want := range map[string]struct{ allowed, noted bool }{
		"FROM scratch\n": {false, false},
		"# syntax=docker/dockerfile:1.10\nFROM scratch\n":     {true, false},
		"# syntax=docker.io/docker/dockerfile:1.10\nFROM x\n": {true, false},
		"# syntax=docker/dockerfile:1\nFROM scratch\n":        {false, true},
		"# syntax=reg.example/evil/frontend\nFROM scratch\n":  {false, true},
		"#syntax = reg.example/evil/frontend\nFROM scratch\n": {false, true},
	} {
		writeDockerfile(t, dir, dockerfile)
		allowed, note := b.frontendImage(build)
		if (allowed != "") != want.allowed || (note != "") != want.noted {
			t.Errorf("%q: allowed %q, note %q", dockerfile, allowed, note)
		}
		opt, notes, err := b.solveOpt(build)
		if err != nil {
			t.Fatal(err)
		}
		if _, forwardingOff := opt.FrontendAttrs["cmdline"]; forwardingOff == want.allowed {
			t.Errorf("%q: cmdline set %v", dockerfile, forwardingOff)
		}
		if len(notes) > 0 != want.noted {
			t.Errorf("%q: notes %q", dockerfile, notes)
		}
		if opt.FrontendAttrs["build-arg:BUILDKIT_CACHE_MOUNT_NS"] != "fnbuilder-acme" || opt.FrontendAttrs["build-arg:BUILDKIT_SANDBOX_HOSTNAME"] != "acme" || opt.SharedKey != sharedKey(build) {
			t.Errorf("%q: tenant keys not set: %v %q", dockerfile, opt.FrontendAttrs, opt.SharedKey)
		}
	}
}
