package buildtar

import (
	"encoding/json"
	"path"
	"strings"
)

// BuildConfig is the JSON in the com.openfaas.docker.config entry. Image,
// BuildArgs, Platforms and SkipPush are what the clients send; Target, Labels
// Dockerfile and Deploy are fnbuilder additions. Unknown keys are ignored.
type BuildConfig struct {
	Image      string            `json:"image"`
	BuildArgs  map[string]string `json:"buildArgs,omitempty"`
	Platforms  []string          `json:"platforms,omitempty"`
	SkipPush   bool              `json:"skipPush,omitempty"`
	Target     string            `json:"target,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Dockerfile string            `json:"dockerfile,omitempty"`
	// Deploy, when set, asks the builder to deploy the pushed image; it is
	// decoded by the build pipeline, which owns the deployment spec.
	Deploy json.RawMessage `json:"deploy,omitempty"`
}

// ParseConfig decodes and checks a build config. Empty platform strings are
// dropped because faas-cli sends [""] for --platforms "" and means "default".
// A Dockerfile path is returned cleaned and relative to the build context.
// Errors are *Error with Entry set to the config entry's name.
func ParseConfig(data []byte) (BuildConfig, error) {
	var c BuildConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return BuildConfig{}, &Error{Entry: ConfigName, Reason: "invalid JSON: " + err.Error(), Err: err}
	}
	if strings.TrimSpace(c.Image) == "" {
		return BuildConfig{}, &Error{Entry: ConfigName, Reason: "image is missing or empty"}
	}

	var platforms []string
	for _, p := range c.Platforms {
		if p = strings.TrimSpace(p); p != "" {
			platforms = append(platforms, p)
		}
	}
	c.Platforms = platforms

	if c.Dockerfile != "" {
		df, ok := contextPath(c.Dockerfile)
		if !ok {
			return BuildConfig{}, &Error{Entry: ConfigName, Reason: "dockerfile must be a relative path inside the build context: " + c.Dockerfile}
		}
		c.Dockerfile = df
	}
	return c, nil
}

// contextPath cleans a path that must name something below the context root.
func contextPath(p string) (string, bool) {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return "", false
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", false
		}
	}
	p = path.Clean(p)
	return p, p != "."
}
