package imageref

import (
	"strings"
	"testing"
)

func TestHost(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for image, want := range map[string]string{
		"busybox":                         "docker.io",
		"busybox:latest":                  "docker.io",
		"library/x":                       "docker.io",
		"alexellis2/fn:0.1":               "docker.io",
		"127.0.0.1:5000/x":                "127.0.0.1:5000",
		"127.0.0.1:5000/team/x:tag":       "127.0.0.1:5000",
		"localhost/x":                     "localhost",
		"localhost:5000/x":                "localhost:5000",
		"ghcr.io/a/b":                     "ghcr.io",
		"ghcr.io/a/b@" + digest:           "ghcr.io",
		"registry.example.com:443/fn/img": "registry.example.com:443",
	} {
		if got := Host(image); got != want {
			t.Errorf("Host(%q) = %q, want %q", image, got, want)
		}
	}
}

func TestNormalizeAndRepository(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, c := range []struct{ image, full, repo string }{
		{"alpine", "docker.io/library/alpine:latest", "alpine"},
		{"acme/fn:1", "docker.io/acme/fn:1", "acme/fn"},
		{"127.0.0.1:5000/acme/fn", "127.0.0.1:5000/acme/fn:latest", "127.0.0.1:5000/acme/fn"},
		{"reg.example.com/a/b@" + digest, "reg.example.com/a/b@" + digest, "reg.example.com/a/b"},
		// Invalid references normalize to "", which matches no prefix.
		{"reg.example.com/acme/../victim/fn", "", "reg.example.com/acme/../victim/fn"},
		{"Reg/UPPER", "", "Reg/UPPER"},
		{"", "", ""},
	} {
		if got := Normalize(c.image); got != c.full {
			t.Errorf("Normalize(%q) = %q, want %q", c.image, got, c.full)
		}
		if got := Repository(c.image); got != c.repo {
			t.Errorf("Repository(%q) = %q, want %q", c.image, got, c.repo)
		}
	}
}
