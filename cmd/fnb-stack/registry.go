package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// The registry's users: build-fn pushes (its registry-config secret is a
// copy of this user's config.json), fnb-provider pulls.
const (
	pushUser = "fnb-push"
	pullUser = "fnb-pull"
)

// registryMode is what `up` last chose: "https" (the default: TLS from the
// stack's CA, htpasswd users) or "http" (up --plain-http-registry). The
// other commands follow it.
func (s *Stack) registryMode() string {
	if b, err := os.ReadFile(s.path("registry-mode")); err == nil && strings.TrimSpace(string(b)) == "http" {
		return "http"
	}
	return "https"
}

func (s *Stack) plainHTTPRegistry() bool { return s.registryMode() == "http" }

// registry is the stack's registry recipe in the chosen mode.
func (s *Stack) registry() daemon.Registry {
	r := s.secureRegistry()
	if s.plainHTTPRegistry() {
		r.CA = ""
	}
	return r
}

func (s *Stack) secureRegistry() daemon.Registry {
	return daemon.Registry{Addr: registryAddr, Dir: s.path("registry"), CA: s.path("tls", "ca.pem")}
}

// ensureRegistryUsers gives the registry its certificate and users (kept
// across ups, made again for a new CA), and build-fn its copy of the push
// user's config.json, in either mode, so that switching modes needs nothing.
func (s *Stack) ensureRegistryUsers(ca *daemon.CA) (bool, error) {
	made, err := s.secureRegistry().Secure(ca, pushUser, pullUser)
	if err != nil {
		return false, err
	}
	push, err := os.ReadFile(s.secureRegistry().UserConfig(pushUser))
	if err != nil {
		return false, err
	}
	if cur, err := os.ReadFile(s.secretPath("registry-config")); err != nil || string(cur) != string(push) {
		return made, daemon.WriteFileAtomic(s.secretPath("registry-config"), push, 0o600)
	}
	return made, nil
}

// registryNote says, for up's summary, how to reach the registry.
func (s *Stack) registryNote() string {
	if s.plainHTTPRegistry() {
		return "plain HTTP, no users (up --plain-http-registry)"
	}
	r := s.registry()
	return fmt.Sprintf("HTTPS from the stack's CA %s; users (config.json each):\n                     %s (build-fn) %s\n                     %s (fnb-provider) %s",
		r.CA, pushUser, r.UserConfig(pushUser), pullUser, r.UserConfig(pullUser))
}

// registryAccess is how buildkitd reaches the registry.
func (s *Stack) registryAccess() daemon.RegistryAccess {
	return daemon.RegistryAccess{Host: registryAddr, PlainHTTP: s.plainHTTPRegistry(), CA: s.registry().CA}
}
