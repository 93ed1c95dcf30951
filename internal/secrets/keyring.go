package secrets

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/openfaas/go-sdk/seal"
	"golang.org/x/crypto/nacl/box"
	"gopkg.in/yaml.v3"
)

// Key is one private key of the builder with its derived key_id.
type Key struct {
	ID      string
	Public  []byte
	private []byte
}

// KeyRing holds the builder's private keys. The first key is the current
// one, served by /publickey; the others stay to open envelopes sealed
// before a rotation.
type KeyRing struct {
	keys []Key
}

// NewKeyRing builds a ring from base64 private keys, current key first.
func NewKeyRing(privateKeys ...[]byte) (*KeyRing, error) {
	if len(privateKeys) == 0 {
		return nil, errors.New("no private key configured")
	}
	ring := &KeyRing{}
	for i, priv := range privateKeys {
		pub, err := PublicKey(priv)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		id, _ := KeyID(pub)
		ring.keys = append(ring.keys, Key{ID: id, Public: pub, private: []byte(strings.TrimSpace(string(priv)))})
	}
	return ring, nil
}

// LoadKeyRing reads private key files (faas-cli keygen format), current key first.
func LoadKeyRing(paths ...string) (*KeyRing, error) {
	var keys [][]byte
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read private key: %w", err)
		}
		keys = append(keys, data)
	}
	ring, err := NewKeyRing(keys...)
	if err != nil && len(paths) > 0 {
		return nil, fmt.Errorf("%s: %w", strings.Join(paths, ", "), err)
	}
	return ring, err
}

// Current is the key new envelopes should be sealed for.
func (k *KeyRing) Current() Key { return k.keys[0] }

// IDs lists the key_ids of every key in the ring.
func (k *KeyRing) IDs() []string {
	ids := make([]string, len(k.keys))
	for i, key := range k.keys {
		ids[i] = key.ID
	}
	return ids
}

// UnknownKeyError says an envelope was sealed for a key this builder lacks.
type UnknownKeyError struct {
	KeyID string
	Known []string
}

func (e *UnknownKeyError) Error() string {
	id := e.KeyID
	if id == "" {
		id = "(none given)"
	}
	return fmt.Sprintf("build secrets were sealed for key_id %s, which this builder does not hold (it has %s)",
		id, strings.Join(e.Known, ", "))
}

// Unseal opens an envelope with whichever key fits. The key_id is only a
// hint, tried first: faas-cli 0.18.4-0.18.5 wrote whatever id /publickey
// returned, so the decryption result has the final word.
func (k *KeyRing) Unseal(envelope []byte) (map[string][]byte, error) {
	env, err := ParseEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, key := range k.ordered(env.KeyID) {
		values, err := seal.Unseal(key.private, envelope)
		if err == nil {
			return values, nil
		}
		if key.ID == env.KeyID {
			lastErr = err
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return nil, &UnknownKeyError{KeyID: env.KeyID, Known: k.IDs()}
}

func (k *KeyRing) ordered(hint string) []Key {
	out := make([]Key, 0, len(k.keys))
	for _, key := range k.keys {
		if key.ID == hint {
			out = append(out, key)
		}
	}
	for _, key := range k.keys {
		if key.ID != hint {
			out = append(out, key)
		}
	}
	return out
}

// ParseEnvelope decodes and checks an envelope without decrypting it: the
// version and algorithm must be the ones go-sdk writes, every name a valid
// BuildKit secret id, and every value base64 of at least a nonce and a tag.
func ParseEnvelope(data []byte) (seal.Envelope, error) {
	var env seal.Envelope
	if err := yaml.Unmarshal(data, &env); err != nil {
		return env, fmt.Errorf("invalid sealed envelope: %w", err)
	}
	if env.Version != seal.Version {
		return env, fmt.Errorf("unsupported envelope version %q, expected %q", env.Version, seal.Version)
	}
	if env.Algorithm != seal.Algorithm {
		return env, fmt.Errorf("unsupported envelope algorithm %q, expected %q", env.Algorithm, seal.Algorithm)
	}
	if _, err := decodeKey([]byte(env.PublicKey)); err != nil {
		return env, fmt.Errorf("invalid envelope public_key: %w", err)
	}
	for name, value := range env.Secrets {
		if err := ValidateName(name); err != nil {
			return env, err
		}
		// As go-sdk decodes it: standard base64 after trimming whitespace.
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
		if err != nil {
			return env, fmt.Errorf("sealed value of %q is not standard base64", name)
		}
		if len(raw) < minSealedLen {
			return env, fmt.Errorf("sealed value of %q is %d bytes, shorter than a nonce and a tag (%d)", name, len(raw), minSealedLen)
		}
	}
	return env, nil
}

// minSealedLen is a 24-byte nonce plus the box tag: the sealed form of an
// empty value.
const minSealedLen = 24 + box.Overhead

// KeyRingLoader reads the key files at paths on every call, so that a
// rotated key is used without a restart.
func KeyRingLoader(paths ...string) func() (*KeyRing, error) {
	return func() (*KeyRing, error) { return LoadKeyRing(paths...) }
}
