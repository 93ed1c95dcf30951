package buildkit

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session/auth"
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
	p := b.sourcePolicy(build, "docker.io/docker/dockerfile:1.10", b.registries.Guarded)
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
	if p := b.sourcePolicy(Build{Tenant: "default"}, "", b.registries.Guarded); p != nil {
		t.Errorf("an unrestricted build got a policy %v", p)
	}
	if p := b.sourcePolicy(Build{Tenant: "none", Pulls: []string{}}, "", b.registries.Guarded); decide(t, p, "reg.example:5000/x/y:1") {
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

// Every build reads config.json again: a registry added to it while
// build-fn runs is guarded from the next build on (a tenant could
// otherwise pull anything there with the builder's credentials), and the
// same read is what the build's session hands BuildKit as credentials.
func TestCredentialsAreReadForEveryBuild(t *testing.T) {
	dir := t.TempDir()
	writeDockerfile(t, dir, "FROM scratch\n")
	authPath := filepath.Join(t.TempDir(), "config.json")
	b := New(Daemon{}, Registries{AuthPath: authPath, Guarded: []string{"reg.example:5000"}})
	build := Build{Context: Dir(dir), Tenant: "acme", Image: "reg.example:5000/acme/fn:1", Pulls: []string{"reg.example:5000/acme/"}}
	foreign := "private.example.com/builder/internal:1"
	next := func() client.SolveOpt {
		t.Helper()
		opt, _, err := b.solveOpt(build)
		if err != nil {
			t.Fatal(err)
		}
		return opt
	}
	writeAuth := func(config string) {
		t.Helper()
		if err := os.WriteFile(authPath, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// No file yet: no credentials, and the registry is not the builder's.
	opt := next()
	if !decide(t, opt.SourcePolicy, foreign) {
		t.Fatalf("%s denied before the builder held credentials there", foreign)
	}
	if user, secret := sessionCredentials(t, opt, "private.example.com"); user != "" || secret != "" {
		t.Errorf("credentials %q/%q without a config.json", user, secret)
	}

	writeAuth(`{"auths":{"private.example.com":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("robot:p1")) + `"}}}`)
	opt = next()
	if decide(t, opt.SourcePolicy, foreign) {
		t.Errorf("%s allowed after config.json gained credentials for it", foreign)
	}
	if !decide(t, opt.SourcePolicy, "reg.example:5000/acme/base:1") || decide(t, opt.SourcePolicy, "reg.example:5000/bob/fn:1") {
		t.Error("the fixed guarded registry lost its rules")
	}
	if user, secret := sessionCredentials(t, opt, "private.example.com"); user != "robot" || secret != "p1" {
		t.Errorf("credentials %q/%q, want robot/p1", user, secret)
	}

	// Rotated in the file: the next build hands out the new password.
	writeAuth(`{"auths":{"private.example.com":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("robot:p2")) + `"}}}`)
	if user, secret := sessionCredentials(t, next(), "private.example.com"); user != "robot" || secret != "p2" {
		t.Errorf("credentials after rotation %q/%q, want robot/p2", user, secret)
	}

	// A helper's host is guarded without running the helper.
	writeAuth(`{"credHelpers":{"helped.example:5000":"fnb-no-such-helper"}}`)
	if opt := next(); decide(t, opt.SourcePolicy, "helped.example:5000/x/y:1") || !decide(t, opt.SourcePolicy, foreign) {
		t.Error("credHelpers host not guarded, or a registry removed from config.json still is")
	}

	// A broken file fails that build, naming the file; fixed, the next
	// build reads it again.
	writeAuth(`{"auths":`)
	if _, _, err := b.solveOpt(build); err == nil || !strings.Contains(err.Error(), authPath) {
		t.Errorf("malformed config.json: error %v, want one naming %s", err, authPath)
	}
	writeAuth(`{"auths":{}}`)
	next()
}

// A config.json that cannot be read (here a directory) is an error naming
// it, not "no credentials".
func TestLoadAuthUnreadable(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadAuth(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("LoadAuth(a directory): %v, want an error naming it", err)
	}
	for _, missing := range []string{"", filepath.Join(dir, "none.json")} {
		if cfg, err := LoadAuth(missing); err != nil || len(CredentialHosts(cfg)) != 0 {
			t.Errorf("LoadAuth(%q): %v, %v: want no credentials", missing, cfg, err)
		}
	}
}

// sessionCredentials asks the build's session, as buildkitd would, for
// its credentials for host.
func sessionCredentials(t *testing.T, opt client.SolveOpt, host string) (user, secret string) {
	t.Helper()
	type credentials interface {
		Credentials(context.Context, *auth.CredentialsRequest) (*auth.CredentialsResponse, error)
	}
	for _, a := range opt.Session {
		if c, ok := a.(credentials); ok {
			res, err := c.Credentials(context.Background(), &auth.CredentialsRequest{Host: host})
			if err != nil {
				t.Fatalf("credentials for %s: %v", host, err)
			}
			return res.Username, res.Secret
		}
	}
	t.Fatal("the build's session has no auth provider")
	return "", ""
}
