// Package secrets holds the builder's Curve25519 keys and seals and unseals
// build secrets in the com.openfaas.secrets envelope. The envelope format is
// go-sdk's seal package, used as-is so that faas-cli and fnbuilder stay
// byte-compatible; this package adds key files, key rotation and name rules.
package secrets

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/openfaas/go-sdk/seal"
	"golang.org/x/crypto/curve25519"
)

// FileName is the tar entry, and the default file name, of a sealed envelope.
const FileName = "com.openfaas.secrets"

// Algorithm is the only sealing algorithm the envelope format knows.
const Algorithm = seal.Algorithm

// KeyPair is a Curve25519 key pair as standard base64 text, the format of
// faas-cli's key files.
type KeyPair struct {
	Public  []byte
	Private []byte
}

// GenerateKeyPair makes a fresh key pair.
func GenerateKeyPair() (KeyPair, error) {
	pub, priv, err := seal.GenerateKeyPair()
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate key pair: %w", err)
	}
	return KeyPair{Public: pub, Private: priv}, nil
}

// WriteKeyFiles writes the private key to path (0600) and the public key to
// path+".pub" (0644), with no trailing newline, creating missing parent
// directories with 0700, as `faas-cli secret keygen -o path` does.
func WriteKeyFiles(path string, kp KeyPair) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(path, kp.Private, 0o600); err != nil {
		return err
	}
	return os.WriteFile(path+".pub", kp.Public, 0o644)
}

// KeyID derives the envelope key_id of a base64 public key: its first 8
// base64 characters.
func KeyID(publicKey []byte) (string, error) {
	return seal.DeriveKeyID(publicKey)
}

// PublicKey derives the base64 public key of a base64 private key, so that a
// builder needs only its private key mounted.
func PublicKey(privateKey []byte) ([]byte, error) {
	priv, err := decodeKey(privateKey)
	if err != nil {
		return nil, fmt.Errorf("invalid private key: %w", err)
	}
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		return nil, fmt.Errorf("invalid private key: %w", err)
	}
	return []byte(base64.StdEncoding.EncodeToString(pub)), nil
}

// DecodePublicKey accepts what faas-cli's --builder-public-key accepts: raw
// base64, or the JSON body of GET /publickey. It returns the base64 key.
func DecodePublicKey(data []byte) ([]byte, error) {
	text := strings.TrimSpace(string(data))
	if strings.HasPrefix(text, "{") {
		var doc struct {
			PublicKey string `json:"public_key"`
			Algorithm string `json:"algorithm"`
		}
		// encoding/json, as faas-cli uses: YAML is not a JSON superset
		// here, it rejects the valid JSON escape "\/" that some servers
		// write for the '/' of a base64 key.
		if err := json.Unmarshal([]byte(text), &doc); err != nil {
			return nil, fmt.Errorf("invalid public key document: %w", err)
		}
		if doc.Algorithm != "" && doc.Algorithm != Algorithm {
			return nil, fmt.Errorf("unsupported build secrets algorithm: %s", doc.Algorithm)
		}
		text = doc.PublicKey
	}
	if _, err := decodeKey([]byte(text)); err != nil {
		return nil, fmt.Errorf("invalid public key: %w", err)
	}
	return []byte(text), nil
}

// Seal encrypts values for the holder of publicKey (base64), producing the
// YAML envelope faas-cli and go-sdk write. Names are validated first, because
// the builder will refuse an envelope it cannot hand to BuildKit.
func Seal(publicKey []byte, values map[string][]byte) ([]byte, error) {
	if len(values) == 0 {
		return nil, fmt.Errorf("at least one secret is required")
	}
	for name := range values {
		if err := ValidateName(name); err != nil {
			return nil, err
		}
	}
	return seal.Seal(publicKey, values)
}

func decodeKey(key []byte) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(key)))
	if err != nil {
		return nil, fmt.Errorf("not standard base64: %w", err)
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("expected a 32-byte key, got %d bytes", len(raw))
	}
	return raw, nil
}
