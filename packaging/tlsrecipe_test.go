package packaging

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestChartTLSRecipe runs the openssl recipe of charts/buildkit/README.md
// and proves its certificates work for mutual TLS: buildkitd's certificate
// for every name build-fn may dial, build-fn's for client authentication,
// and nothing signed by another CA.
func TestChartTLSRecipe(t *testing.T) {
	root := repoRoot(t)
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl not found (apt-get install openssl): the chart README's TLS recipe needs it: %v", err)
	}
	readme, err := os.ReadFile(filepath.Join(root, chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	script := recipeBlock(t, string(readme))
	dir := t.TempDir()
	run(t, dir, nil, "bash", "-c", script)
	certs := filepath.Join(dir, "buildkit-certs")

	caPool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !caPool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	server, err := tls.LoadX509KeyPair(filepath.Join(certs, "cert.pem"), filepath.Join(certs, "key.pem"))
	if err != nil {
		t.Fatalf("server pair: %v", err)
	}
	client, err := tls.LoadX509KeyPair(filepath.Join(certs, "client-cert.pem"), filepath.Join(certs, "client-key.pem"))
	if err != nil {
		t.Fatalf("client pair: %v", err)
	}

	// The recipe's defaults: release buildkit in openfaas, 3 replicas; the
	// wildcard must cover a 4th.
	names := []string{
		"buildkit.openfaas.svc.cluster.local",
		"buildkit.openfaas.svc",
		"buildkit-0.buildkit-headless.openfaas.svc.cluster.local",
		"buildkit-2.buildkit-headless.openfaas.svc.cluster.local",
		"buildkit-3.buildkit-headless.openfaas.svc.cluster.local",
		"localhost",
	}
	// buildkitd's setting with --tlscacert: client certificates required.
	serverConf := &tls.Config{
		Certificates: []tls.Certificate{server},
		ClientCAs:    caPool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	for _, name := range names {
		clientConf := &tls.Config{RootCAs: caPool, ServerName: name, Certificates: []tls.Certificate{client}}
		if err := handshake(serverConf, clientConf); err != nil {
			t.Errorf("mutual TLS as %s: %v", name, err)
		}
	}
	// A client without a certificate, and a server name outside the
	// release, must be refused.
	if err := handshake(serverConf, &tls.Config{RootCAs: caPool, ServerName: names[0]}); err == nil {
		t.Error("a client without a certificate got through")
	}
	if err := handshake(serverConf, &tls.Config{RootCAs: caPool, ServerName: "buildkit.default.svc.cluster.local",
		Certificates: []tls.Certificate{client}}); err == nil {
		t.Error("the server certificate is valid for a name it should not cover")
	}
	// Each certificate is good for its own side only (extended key usage).
	for _, c := range []struct {
		name  string
		pair  tls.Certificate
		usage x509.ExtKeyUsage
	}{
		{"client-cert.pem", client, x509.ExtKeyUsageServerAuth},
		{"cert.pem", server, x509.ExtKeyUsageClientAuth},
	} {
		cert, err := x509.ParseCertificate(c.pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: caPool, KeyUsages: []x509.ExtKeyUsage{c.usage}}); err == nil {
			t.Errorf("%s is also valid for %v: set its extendedKeyUsage", c.name, c.usage)
		}
	}
}

// recipeBlock is the first ```sh block after the tls-recipe marker.
func recipeBlock(t *testing.T, readme string) string {
	t.Helper()
	_, after, ok := strings.Cut(readme, "<!-- tls-recipe")
	if !ok {
		t.Fatal("charts/buildkit/README.md has no <!-- tls-recipe --> marker")
	}
	_, after, ok = strings.Cut(after, "```sh\n")
	if !ok {
		t.Fatal("no ```sh block after the tls-recipe marker")
	}
	block, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatal("unterminated ```sh block after the tls-recipe marker")
	}
	return block
}

// handshake runs a TLS handshake between the two configurations in memory.
func handshake(serverConf, clientConf *tls.Config) error {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, serverConf)
		err := s.Handshake()
		if err == nil {
			// TLS 1.3 reports a rejected client certificate on the
			// first read after the handshake.
			_, err = s.Write([]byte{1})
		}
		a.Close()
		done <- err
	}()
	c := tls.Client(b, clientConf)
	err := c.Handshake()
	if err == nil {
		_, err = c.Read(make([]byte, 1))
	}
	b.Close()
	if serr := <-done; err == nil {
		err = serr
	}
	return err
}
