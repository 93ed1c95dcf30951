package cluster

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: not PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestEnsurePKIMakesWhatKubernetesReads(t *testing.T) {
	c := Cluster{Dir: t.TempDir()}
	if err := c.EnsurePKI(); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, c.CAFile())
	for _, cl := range clients {
		cert := readCert(t, c.CertFile(cl.name))
		if err := cert.CheckSignatureFrom(ca); err != nil {
			t.Errorf("%s: not signed by the cluster CA: %v", cl.name, err)
		}
		if cert.Subject.CommonName != cl.cn || !slices.Equal(cert.Subject.Organization, cl.orgs) {
			t.Errorf("%s: subject %v, want CN=%s O=%v", cl.name, cert.Subject, cl.cn, cl.orgs)
		}
		if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
			t.Errorf("%s: no clientAuth usage", cl.name)
		}
	}
	if got := readCert(t, c.CertFile("kubelet")).Subject; got.CommonName != "system:node:"+NodeName || !slices.Equal(got.Organization, []string{"system:nodes"}) {
		t.Errorf("kubelet subject %v: the Node authorizer would not know it", got)
	}
	api := readCert(t, c.CertFile("apiserver"))
	for _, ip := range []string{BridgeIP, APIServiceIP, "127.0.0.1"} {
		if !slices.ContainsFunc(api.IPAddresses, func(a net.IP) bool { return a.Equal(net.ParseIP(ip)) }) {
			t.Errorf("apiserver certificate lacks IP %s (has %v)", ip, api.IPAddresses)
		}
	}
	if !slices.Contains(api.DNSNames, "kubernetes.default.svc."+ClusterDomain) {
		t.Errorf("apiserver certificate lacks the in-cluster name: %v", api.DNSNames)
	}
	for _, f := range []string{c.ServiceAccountKey(), c.ServiceAccountPub()} {
		if b, err := os.ReadFile(f); err != nil || !bytes.Contains(b, []byte("-----BEGIN")) {
			t.Errorf("%s: %v", f, err)
		}
	}

	// Every kubeconfig points at the apiserver and at files that exist.
	for _, name := range kubeconfigClients {
		var kc struct {
			Clusters []struct {
				Cluster struct {
					Server string `yaml:"server"`
					CA     string `yaml:"certificate-authority"`
				} `yaml:"cluster"`
			} `yaml:"clusters"`
			Users []struct {
				User struct {
					Cert string `yaml:"client-certificate"`
					Key  string `yaml:"client-key"`
				} `yaml:"user"`
			} `yaml:"users"`
		}
		b, err := os.ReadFile(c.Kubeconfig(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &kc); err != nil || len(kc.Clusters) != 1 || len(kc.Users) != 1 {
			t.Fatalf("%s kubeconfig: %v\n%s", name, err, b)
		}
		if kc.Clusters[0].Cluster.Server != APIServerURL {
			t.Errorf("%s kubeconfig server %q, want %q", name, kc.Clusters[0].Cluster.Server, APIServerURL)
		}
		for _, f := range []string{kc.Clusters[0].Cluster.CA, kc.Users[0].User.Cert, kc.Users[0].User.Key} {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("%s kubeconfig names %q: %v", name, f, err)
			}
		}
	}

	// A second run keeps everything: the kubeconfig handed out stays valid.
	before, _ := os.ReadFile(c.CertFile("admin"))
	if err := c.EnsurePKI(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(c.CertFile("admin")); !bytes.Equal(before, after) {
		t.Error("a second EnsurePKI replaced the admin certificate")
	}
}

// The apiserver's certificate and a client's, as the apiserver uses them:
// mutual TLS to the bridge address, and a client without a certificate refused.
func TestPKIMutualTLS(t *testing.T) {
	c := Cluster{Dir: t.TempDir()}
	if err := c.EnsurePKI(); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(c.CAFile())
	pool.AppendCertsFromPEM(caPEM)
	serverCert, err := tls.LoadX509KeyPair(c.CertFile("apiserver"), c.KeyFile("apiserver"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.TLS.PeerCertificates[0].Subject.CommonName))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	dial := func(withCert bool) (string, error) {
		cfg := &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc." + ClusterDomain}
		if withCert {
			cc, err := tls.LoadX509KeyPair(c.CertFile("admin"), c.KeyFile("admin"))
			if err != nil {
				return "", err
			}
			cfg.Certificates = []tls.Certificate{cc}
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		res, err := client.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(res.Body)
		return b.String(), nil
	}
	if who, err := dial(true); err != nil || who != "fnbk-admin" {
		t.Errorf("admin over mutual TLS: %q, %v", who, err)
	}
	if _, err := dial(false); err == nil {
		t.Error("a client without a certificate got through")
	}
}
