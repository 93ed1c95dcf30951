package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

// The gateway's admin user; the password is random and kept in
// secrets/basic-auth-password.
const adminUser = "admin"

// Function secrets the stack creates through the gateway, one file each in
// secrets/ (0600), under the names the functions read.
var functionSecrets = []string{
	"payload-secret",
	"build-secrets-key",
	"basic-auth-user",
	"basic-auth-password",
	"buildkit-tls-ca",
	"buildkit-tls-cert",
	"buildkit-tls-key",
	"registry-config",
}

// ensureCredentials creates what is missing: the payload secret, the
// gateway's basic-auth credentials, the build-secrets key pair (what
// `fnb keygen` writes) and the TLS material of buildkitd's mutual TLS.
// Existing files are kept, so clients keep working across `up`s.
func (s *Stack) ensureCredentials() error {
	if err := os.MkdirAll(s.secretsDir(), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(s.secretsDir(), 0o700); err != nil {
		return err
	}
	created := false
	for name, value := range map[string]string{
		"payload-secret":      randomBase64(32),
		"basic-auth-password": randomBase64(24),
		"basic-auth-user":     adminUser,
	} {
		if _, err := os.Stat(s.secretPath(name)); err == nil {
			continue
		}
		if err := daemon.WriteFileAtomic(s.secretPath(name), []byte(value), 0o600); err != nil {
			return err
		}
		created = created || name != "basic-auth-user"
	}
	if _, err := os.Stat(s.secretPath("build-secrets-key")); err != nil {
		kp, err := secrets.GenerateKeyPair()
		if err != nil {
			return err
		}
		if err := secrets.WriteKeyFiles(s.secretPath("build-secrets-key"), kp); err != nil {
			return err
		}
		created = true
	}
	ca, err := s.ensureTLS()
	if err != nil {
		return fmt.Errorf("buildkitd TLS: %w", err)
	}
	users, err := s.ensureRegistryUsers(ca)
	if err != nil {
		return fmt.Errorf("registry certificate and users: %w", err)
	}
	created = created || users
	if created {
		s.logf("credentials      created in %s", s.secretsDir())
	}
	return nil
}

// ensureTLS makes what is missing of the stack's TLS: a CA, kept in tls/
// (root only) and reused by every later up; a server certificate for
// buildkitd (IP SAN: the bridge address functions dial); and build-fn's
// client certificate — each issued again when the CA did not issue it.
// buildkitd gets its copies in buildkit/tls/ when it starts.
func (s *Stack) ensureTLS() (*daemon.CA, error) {
	ca, err := daemon.LoadOrCreateCA(s.path("tls", "ca.pem"), s.path("tls", "ca-key.pem"), "fnbuilder local stack CA")
	if err != nil {
		return nil, err
	}
	if err := daemon.WriteFileAtomic(s.secretPath("buildkit-tls-ca"), ca.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if _, err := ca.IssueFiles(s.path("tls", "server.pem"), s.path("tls", "server-key.pem"), "buildkitd", x509.ExtKeyUsageServerAuth, bridgeIP, "127.0.0.1", "buildkitd"); err != nil {
		return nil, err
	}
	_, err = ca.IssueFiles(s.secretPath("buildkit-tls-cert"), s.secretPath("buildkit-tls-key"), "build-fn", x509.ExtKeyUsageClientAuth)
	return ca, err
}

// randomBase64 is n random bytes as base64 text with no newline, as
// `faas-cli secret generate` writes a secret.
func randomBase64(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.StdEncoding.EncodeToString(b)
}

// readSecret reads one of the stack's secret files.
func (s *Stack) readSecret(name string) ([]byte, error) {
	b, err := os.ReadFile(s.secretPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: run `make up` first", s.secretPath(name))
	}
	return b, err
}
