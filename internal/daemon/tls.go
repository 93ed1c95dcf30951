package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"time"
)

// CA is a local certificate authority for the daemons' TLS (buildkitd's
// mutual TLS, the registry's HTTPS): ECDSA P-256, ten years.
type CA struct {
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
	CertPEM, KeyPEM []byte
}

// NewCA makes a CA named name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := certTemplate(name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return LoadCA(pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER))
}

// LoadCA reads a CA that NewCA made earlier.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("CA: not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, errors.New("CA: not an ECDSA CA certificate and key")
	}
	return &CA{cert: cert, key: ec, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Issue makes a certificate and key (PEM) for usage: a server's for its
// hosts (IP addresses or DNS names), or a client's.
func (ca *CA) Issue(cn string, usage x509.ExtKeyUsage, hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := certTemplate(cn)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
}

func certTemplate(cn string) *x509.Certificate {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		serial = big.NewInt(time.Now().UnixNano())
	}
	from := time.Now().Add(-time.Hour)
	return &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: from, NotAfter: from.Add(10 * 365 * 24 * time.Hour)}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// LoadOrCreateCA reads the CA in certFile and keyFile, or makes one named
// name and writes it there (0600): a CA is kept and reused.
func LoadOrCreateCA(certFile, keyFile, name string) (*CA, error) {
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	if ca, err := LoadCA(certPEM, keyPEM); err == nil {
		return ca, nil
	}
	ca, err := NewCA(name)
	if err != nil {
		return nil, err
	}
	return ca, writeAll(0o600, map[string][]byte{certFile: ca.CertPEM, keyFile: ca.KeyPEM})
}

// IssueFiles writes a certificate and its key (0600) for usage and hosts,
// unless certFile already holds one this CA issued. It reports whether it
// wrote them.
func (ca *CA) IssueFiles(certFile, keyFile, cn string, usage x509.ExtKeyUsage, hosts ...string) (bool, error) {
	if b, err := os.ReadFile(certFile); err == nil && fileThere(keyFile) {
		if block, _ := pem.Decode(b); block != nil {
			if cert, err := x509.ParseCertificate(block.Bytes); err == nil && cert.CheckSignatureFrom(ca.cert) == nil {
				return false, nil
			}
		}
	}
	cert, key, err := ca.Issue(cn, usage, hosts...)
	if err != nil {
		return false, err
	}
	return true, writeAll(0o600, map[string][]byte{certFile: cert, keyFile: key})
}
