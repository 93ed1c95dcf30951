package buildkit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	spb "github.com/moby/buildkit/sourcepolicy/pb"

	"github.com/fnbuilder/fnbuilder/internal/imageref"
)

// This file owns how one build is kept apart from others on a shared
// daemon: which images it may resolve, which frontend parses its
// Dockerfile, and under which keys it shares caches.

// sharedKey keys BuildKit's incremental copy of the build context: a
// request's files are compared with the last copy under the same key, so
// no two tenants, nor two repositories of one tenant, may share one.
func sharedKey(b Build) string {
	return "fnbuilder-" + digestOf(b.Tenant, imageref.Repository(b.Image))[:32]
}

// cacheMountNamespace prefixes every RUN --mount=type=cache id of the
// build (BuildKit's BUILDKIT_CACHE_MOUNT_NS), so a tenant's caches are its
// own. Tenant names are DNS labels: no "/" can make one look like another.
func cacheMountNamespace(b Build) string { return "fnbuilder-" + b.Tenant }

// sandboxHostname is the hostname of the build's RUN steps. It is part of
// every RUN step's cache key, and that is why it is set: BuildKit leaves
// out of that key the values of secret mounts and the ids of cache mounts,
// so without it one tenant's RUN step could be answered from the layer
// another tenant's identical step made with its own secret or its own
// cache. Tenant names are DNS labels, so valid hostnames.
func sandboxHostname(b Build) string { return b.Tenant }

// cacheTag names a repository's registry cache inside the cache repo: the
// readable part helps an operator, the digest of tenant and repository
// keeps two of them from ever sharing a tag. A tag may only hold
// [A-Za-z0-9_.-] and 128 characters.
func cacheTag(b Build) string {
	var s strings.Builder
	for _, c := range b.Tenant + "-" + imageref.Repository(b.Image) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
			s.WriteRune(c)
		default:
			s.WriteByte('-')
		}
	}
	readable := strings.TrimLeft(s.String(), ".-")
	if len(readable) > 95 {
		readable = readable[:95]
	}
	return readable + "-" + digestOf(b.Tenant, imageref.Repository(b.Image))[:32]
}

func digestOf(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])
}

// sourcePolicy is the BuildKit source policy of one build: on guarded
// registries only the build's own pull prefixes resolve (BuildKit refuses
// the rest before asking the registry), and an allowed frontend image is
// let through. For ALLOW and DENY rules the last match wins.
func (b *Builder) sourcePolicy(build Build, frontend string, guarded []string) *spb.Policy {
	var rules []*spb.Rule
	if build.Pulls != nil {
		for _, host := range guarded {
			rules = append(rules, imageRule(spb.PolicyAction_DENY, host+"/"))
		}
		for _, prefix := range build.Pulls {
			rules = append(rules, imageRule(spb.PolicyAction_ALLOW, prefix))
		}
	}
	if frontend != "" {
		rules = append(rules, imageRule(spb.PolicyAction_ALLOW, frontend))
	}
	if len(rules) == 0 {
		return nil
	}
	return &spb.Policy{Rules: rules}
}

// guarded are the registries of one build's source policy: the fixed
// ones, and those auth, the credentials this build read, holds any for.
// Taken from the same read that hands BuildKit the credentials, so a
// registry added to config.json while build-fn runs is guarded from the
// first build that can log in to it.
func (b *Builder) guarded(auth *configfile.ConfigFile) []string {
	hosts := append(slices.Clone(b.registries.Guarded), CredentialHosts(auth)...)
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// imageRule matches every image whose full name starts with prefix.
func imageRule(action spb.PolicyAction, prefix string) *spb.Rule {
	return &spb.Rule{
		Action: action,
		Selector: &spb.Selector{
			Identifier: "^" + regexp.QuoteMeta("docker-image://"+prefix) + ".*$",
			MatchType:  spb.MatchType_REGEX,
		},
	}
}

// frontendImage reads the Dockerfile's "# syntax=" line. It returns the
// image to let through when the operator allows it, or, when the line
// names another image, a note for the build log: the built-in frontend
// then builds, as it does for a Dockerfile without the line.
func (b *Builder) frontendImage(build Build) (allowed, note string) {
	data, err := readDockerfile(build)
	if err != nil {
		return "", "" // BuildKit reports a missing Dockerfile itself
	}
	ref, _, _, ok := parser.DetectSyntax(data)
	if !ok {
		return "", ""
	}
	name := imageref.Normalize(ref)
	if name != "" && slices.Contains(b.registries.Frontends, name) {
		return name, ""
	}
	return "", fmt.Sprintf("ignoring the Dockerfile's syntax line (%s): this builder allows no other frontend image; the built-in Dockerfile frontend builds it", ref)
}

func readDockerfile(build Build) ([]byte, error) {
	name := build.Dockerfile
	if name == "" {
		name = "Dockerfile"
	}
	return ReadFile(build.Context, name, 64<<10) // the syntax line is among the first lines
}

// CredentialHosts are the registries a Docker config holds credentials
// for, as host[:port] ("https://index.docker.io/v1/" is docker.io): its
// auths and credHelpers keys. A credsStore is asked for every other
// registry, and which ones it answers for cannot be known without running
// it (ecr-login's and gcr's answer for whole domains, listing nothing), so
// it guards docker.io, where docker login keeps its default credentials,
// and the hosts docker login recorded under auths (empty entries); README
// "Registry credentials" tells operators to name other registries in
// credHelpers. Guarding every registry instead would refuse each tenant
// every public base image outside its prefixes.
func CredentialHosts(cfg *configfile.ConfigFile) []string {
	if cfg == nil {
		return nil
	}
	var hosts []string
	add := func(key string) {
		key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
		host, _, _ := strings.Cut(key, "/")
		if host == "index.docker.io" || host == "registry-1.docker.io" {
			host = "docker.io"
		}
		if host != "" && !slices.Contains(hosts, host) {
			hosts = append(hosts, host)
		}
	}
	for key := range cfg.AuthConfigs {
		add(key)
	}
	for key := range cfg.CredentialHelpers {
		add(key)
	}
	if cfg.CredentialsStore != "" {
		add("docker.io")
	}
	slices.Sort(hosts)
	return hosts
}
