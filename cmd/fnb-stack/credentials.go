package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

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
	random := func(name string, n int) error {
		if _, err := os.Stat(s.secretPath(name)); err == nil {
			return nil
		}
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		created = true
		// Base64 text with no newline, as `faas-cli secret generate` writes.
		return writeFileAtomic(s.secretPath(name), []byte(base64.StdEncoding.EncodeToString(b)), 0o600)
	}
	if err := random("payload-secret", 32); err != nil {
		return err
	}
	if err := random("basic-auth-password", 24); err != nil {
		return err
	}
	if _, err := os.Stat(s.secretPath("basic-auth-user")); err != nil {
		if err := writeFileAtomic(s.secretPath("basic-auth-user"), []byte(adminUser), 0o600); err != nil {
			return err
		}
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
	if err := s.ensureTLS(); err != nil {
		return fmt.Errorf("buildkitd TLS: %w", err)
	}
	if created {
		s.logf("credentials      created in %s", s.secretsDir())
	}
	return nil
}

// ensureTLS makes a CA, a server certificate for buildkitd (IP SAN: the
// bridge address functions dial) and a client certificate for build-fn.
// The CA key stays in tls/ (root only); buildkitd gets its copies in
// buildkit/tls/ when it starts.
func (s *Stack) ensureTLS() error {
	dir := s.path("tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	caCert, caKeyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	serverCert, serverKey := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	clientCert, clientKey := s.secretPath("buildkit-tls-cert"), s.secretPath("buildkit-tls-key")
	all := []string{caCert, caKeyPath, serverCert, serverKey, clientCert, clientKey, s.secretPath("buildkit-tls-ca")}
	complete := true
	for _, p := range all {
		if _, err := os.Stat(p); err != nil {
			complete = false
		}
	}
	if complete {
		return nil
	}

	now := time.Now().Add(-time.Hour)
	until := now.Add(10 * 365 * 24 * time.Hour)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "fnbuilder local stack CA"},
		NotBefore:             now,
		NotAfter:              until,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	issue := func(cn string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) ([]byte, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now,
			NotAfter:     until,
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
	}
	sCert, sKey, err := issue("buildkitd", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP(bridgeIP), net.ParseIP("127.0.0.1")}, []string{"buildkitd"})
	if err != nil {
		return err
	}
	cCert, cKey, err := issue("build-fn", x509.ExtKeyUsageClientAuth, nil, nil)
	if err != nil {
		return err
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return err
	}
	caPEM := pemBlock("CERTIFICATE", caDER)
	files := []struct {
		path string
		data []byte
	}{
		{caKeyPath, pemBlock("PRIVATE KEY", caKeyDER)},
		{caCert, caPEM},
		{serverCert, sCert},
		{serverKey, sKey},
		{clientCert, cCert},
		{clientKey, cKey},
		{s.secretPath("buildkit-tls-ca"), caPEM},
	}
	for _, f := range files {
		if err := writeFileAtomic(f.path, f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// readSecret reads one of the stack's secret files.
func (s *Stack) readSecret(name string) ([]byte, error) {
	b, err := os.ReadFile(s.secretPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: run `make up` first", s.secretPath(name))
	}
	return b, err
}
