package pipeline

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/fnbuilder/fnbuilder/internal/buildtar"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// checkRequest refuses, before anything is built, what a request may not
// ask of the builder whoever sends it, and what its tenant may not do.
func checkRequest(cfg buildtar.BuildConfig, t tenant.Tenant) error {
	for name := range cfg.BuildArgs {
		if err := checkBuildArg(name); err != nil {
			return err
		}
	}
	if !t.MayPush(cfg.Image) {
		return fmt.Errorf("%s: image %q is not one tenant %s may push (its images: %s)",
			buildtar.ConfigName, cfg.Image, t.Name, strings.Join(t.Images, ", "))
	}
	return nil
}

// checkBuildArg refuses the args that steer BuildKit's frontend rather
// than the Dockerfile: BUILDKIT_SYNTAX fetches a frontend image of the
// sender's choosing, BUILDKIT_CACHE_MOUNT_NS picks another tenant's cache
// mounts; the builder sets what it needs itself. Names with "=", blanks
// or control characters are no Dockerfile ARG either.
func checkBuildArg(name string) error {
	if strings.HasPrefix(strings.ToUpper(name), "BUILDKIT_") {
		return fmt.Errorf("%s: build arg %s is reserved: BUILDKIT_* args control the builder itself", buildtar.ConfigName, name)
	}
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r == '=' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fmt.Errorf("%s: build arg name %q is not valid", buildtar.ConfigName, name)
	}
	return nil
}
