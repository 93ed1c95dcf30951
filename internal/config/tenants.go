package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"

	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// Tenants are the builder's tenants: those of tenants_file, or the one
// implicit tenant keyed by the payload secret. disable_hmac names nobody,
// so it cannot go with a tenants file.
func (c Config) Tenants() (*tenant.Directory, error) {
	readKey := func(secret string) ([]byte, error) { return os.ReadFile(c.SecretPath(secret)) }
	path := c.String("tenants_file", "")
	if path == "" {
		// The payload secret's path may be set in full (payload_secret_name
		// is a name under secret_mount_path).
		implicit := tenant.Implicit(c.String("payload_secret_name", PayloadSecretName))
		return tenant.NewDirectory([]tenant.Tenant{implicit}, func(string) ([]byte, error) {
			return os.ReadFile(c.PayloadSecretPath())
		}), nil
	}
	if off, err := c.Bool("disable_hmac", false); err != nil {
		return nil, err
	} else if off {
		return nil, errors.New("disable_hmac cannot be used with tenants_file: the signature is what names a request's tenant")
	}
	tenants, err := tenant.Load(path)
	if err != nil {
		return nil, err
	}
	return tenant.NewDirectory(tenants, readKey), nil
}

// BuilderSecrets are the secrets that make the builder what it is: the
// payload secrets, the private keys that open every envelope, registry,
// gateway and BuildKit credentials. No function a tenant deploys may
// mount one, whatever the tenants file says.
func (c Config) BuilderSecrets(tenants *tenant.Directory) []string {
	names := []string{
		c.String("payload_secret_name", PayloadSecretName),
		"registry-config",
		"basic-auth-user", "basic-auth-password",
		c.String("gateway_user_secret", "basic-auth-user"),
		c.String("gateway_password_secret", "basic-auth-password"),
		"buildkit-tls-ca", "buildkit-tls-cert", "buildkit-tls-key",
	}
	names = append(names, tenants.PayloadSecrets()...)
	for _, p := range c.PrivateKeyPaths() {
		names = append(names, filepath.Base(p))
	}
	names = append(names, c.List("reserved_secrets", nil)...)
	slices.Sort(names)
	return slices.Compact(names)
}

// BuilderFunctions are the builder's own functions, which no tenant may
// deploy over.
func (c Config) BuilderFunctions() []string {
	return c.List("builder_functions", []string{"build-fn", "deploy-fn", "publickey-fn", "seal-fn"})
}

// FunctionNamespace is where a deploy without a namespace goes, as the
// gateway's own function_namespace setting says.
func (c Config) FunctionNamespace() string {
	return c.String("function_namespace", "openfaas-fn")
}
