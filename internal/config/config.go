// Package config reads fnbuilder's settings the way OpenFaaS functions do:
// plain settings from environment variables, sensitive ones from secret
// files under secret_mount_path. Defaults are shared by every function so
// that one set of secrets serves the whole builder.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Default secret names, the same in every function and in stack.yaml.
const (
	PayloadSecretName   = "payload-secret"
	BuildSecretsKeyName = "build-secrets-key"
	DefaultSecretMount  = "/var/openfaas/secrets"
)

// Env looks settings up; os.Getenv in production, a map in tests.
type Env func(name string) string

// Config is the settings every function shares.
type Config struct {
	env Env
}

// FromEnv reads the process environment.
func FromEnv() Config { return Config{env: os.Getenv} }

// FromMap is for tests and for `fnb serve` overrides.
func FromMap(m map[string]string) Config {
	return Config{env: func(name string) string { return m[name] }}
}

// String returns the setting or def when it is unset or blank.
func (c Config) String(name, def string) string {
	if v := strings.TrimSpace(c.env(name)); v != "" {
		return v
	}
	return def
}

// Int returns an integer setting.
func (c Config) Int(name string, def int64) (int64, error) {
	v := c.String(name, "")
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("setting %s=%q: not an integer", name, v)
	}
	return n, nil
}

// Positive is Int for a setting that must be above zero (a byte limit).
func (c Config) Positive(name string, def int64) (int64, error) {
	n, err := c.Int(name, def)
	if err == nil && n <= 0 {
		err = fmt.Errorf("setting %s=%d: must be positive", name, n)
	}
	return n, err
}

// Bool returns a boolean setting ("true", "1", ...).
func (c Config) Bool(name string, def bool) (bool, error) {
	v := c.String(name, "")
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("setting %s=%q: not a boolean", name, v)
	}
	return b, nil
}

// Duration accepts whole seconds ("300") or a Go duration ("5m"), as the
// OpenFaaS templates and watchdog do.
func (c Config) Duration(name string, def time.Duration) (time.Duration, error) {
	v := c.String(name, "")
	if v == "" {
		return def, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("setting %s=%q: not a duration", name, v)
	}
	return d, nil
}

// List splits a comma-separated setting, dropping blanks.
func (c Config) List(name string, def []string) []string {
	v := c.String(name, "")
	if v == "" {
		return def
	}
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// SecretPath is where the OpenFaaS secret name is mounted.
func (c Config) SecretPath(name string) string {
	return filepath.Join(c.String("secret_mount_path", DefaultSecretMount), name)
}

// ReadSecret reads a secret file, naming the path when it cannot.
func (c Config) ReadSecret(name string) ([]byte, error) {
	data, err := os.ReadFile(c.SecretPath(name))
	if err != nil {
		return nil, fmt.Errorf("read secret %q: %w", name, err)
	}
	return data, nil
}

// PayloadSecretPath is the HMAC key file (setting payload_secret_name).
func (c Config) PayloadSecretPath() string {
	return c.SecretPath(c.String("payload_secret_name", PayloadSecretName))
}

// PrivateKeyPaths lists the builder's private key files, current first.
// build_secrets_private_key_path (the Pro builder's name) overrides the
// current key's path; build_secrets_key_names adds older keys kept for
// rotation, e.g. "build-secrets-key,build-secrets-key-old".
func (c Config) PrivateKeyPaths() []string {
	names := c.List("build_secrets_key_names", nil)
	if len(names) == 0 {
		// Unset, or only commas and blanks: List gives nothing back then.
		names = []string{BuildSecretsKeyName}
	}
	paths := make([]string, len(names))
	for i, name := range names {
		paths[i] = c.SecretPath(name)
	}
	if p := c.String("build_secrets_private_key_path", ""); p != "" {
		paths[0] = p
	}
	return paths
}

// GatewayURL is the OpenFaaS gateway deploys go through.
func (c Config) GatewayURL() string {
	return c.String("gateway_url", "http://gateway.openfaas:8080")
}

// GatewayCredentials are the gateway's basic-auth user and password from
// their secrets (gateway_user_secret, gateway_password_secret); none when
// the user secret is not mounted.
func (c Config) GatewayCredentials() (user, password string, err error) {
	u, err := c.ReadSecret(c.String("gateway_user_secret", "basic-auth-user"))
	if err != nil {
		return "", "", nil
	}
	p, err := c.ReadSecret(c.String("gateway_password_secret", "basic-auth-password"))
	if err != nil {
		return "", "", err
	}
	return strings.TrimSpace(string(u)), strings.TrimSpace(string(p)), nil
}
