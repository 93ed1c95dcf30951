package secrets

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openfaas/go-sdk/seal"
)

// vectors is the shared folder of wire vectors captured with the real clients.
const vectors = "../../../shared/vectors"

const sharedKeyID = "7OoESESw"

func readVector(t testing.TB, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectors, rel))
	if err != nil {
		t.Fatalf("read vector: %v", err)
	}
	return data
}

// expectedPlaintexts decodes sealed/expected-plaintexts.json into raw bytes.
func expectedPlaintexts(t testing.TB) map[string][]byte {
	t.Helper()
	var doc struct {
		ExpectedKeyID string `json:"expected_key_id"`
		Secrets       map[string]struct {
			Base64 string `json:"base64"`
			Length int    `json:"length"`
		} `json:"secrets"`
	}
	if err := json.Unmarshal(readVector(t, "sealed/expected-plaintexts.json"), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.ExpectedKeyID != sharedKeyID {
		t.Fatalf("expected-plaintexts.json names key %q", doc.ExpectedKeyID)
	}
	out := make(map[string][]byte, len(doc.Secrets))
	for name, s := range doc.Secrets {
		raw, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(raw) != s.Length {
			t.Fatalf("%s: vector length %d, decoded %d", name, s.Length, len(raw))
		}
		out[name] = raw
	}
	if len(out) != 4 {
		t.Fatalf("expected 4 plaintexts in the vector, got %d", len(out))
	}
	return out
}

func sharedRing(t testing.TB) *KeyRing {
	t.Helper()
	ring, err := NewKeyRing(readVector(t, "keys/key"))
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

func assertValues(t *testing.T, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d values %v, want %d", len(got), keys(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("value %q missing", name)
			continue
		}
		if !bytes.Equal(g, w) {
			t.Errorf("value %q = %q, want %q", name, g, w)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func newKeyPair(t testing.TB) KeyPair {
	t.Helper()
	kp, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// oldClientEnvelope is the com.openfaas.secrets entry of vector 08: faas-cli
// 0.18.5 copied key_id "builder-key-1" from /publickey.
func oldClientEnvelope(t testing.TB) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(vectors, "requests/08-old-faas-cli-0.18.5-publickey-key-id/2-POST-build/body.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("no %s in the vector tar", FileName)
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == FileName {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}

func TestUnsealSharedVector(t *testing.T) {
	got, err := sharedRing(t).Unseal(readVector(t, "sealed/com.openfaas.secrets"))
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	assertValues(t, got, expectedPlaintexts(t))
}

func TestUnsealFaasCLIVector(t *testing.T) {
	ring, err := NewKeyRing(readVector(t, "faas-cli-sealed-test/key"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ring.Unseal(readVector(t, "faas-cli-sealed-test/com.openfaas.secrets"))
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	assertValues(t, got, map[string][]byte{
		"api_key":   []byte("sk-live-my-secret-key"),
		"npm_token": []byte("npm_AbC123"),
	})
}

func TestKeyID(t *testing.T) {
	pub := readVector(t, "keys/key.pub")
	id, err := KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	if id != sharedKeyID {
		t.Errorf("KeyID(key.pub) = %q, want %q", id, sharedKeyID)
	}
	derived, err := PublicKey(readVector(t, "keys/key"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(derived, pub) {
		t.Errorf("PublicKey(key) = %q, want key.pub %q", derived, pub)
	}
	id2, err := KeyID(derived)
	if err != nil {
		t.Fatal(err)
	}
	if id2 != sharedKeyID {
		t.Errorf("KeyID(PublicKey(key)) = %q, want %q", id2, sharedKeyID)
	}
	ring := sharedRing(t)
	if ring.Current().ID != sharedKeyID || !bytes.Equal(ring.Current().Public, pub) {
		t.Errorf("ring current key = %q %q", ring.Current().ID, ring.Current().Public)
	}
	if _, err := KeyID([]byte("not-a-key")); err == nil {
		t.Error("KeyID of garbage: no error")
	}
}

func TestPublicKeyMatchesGeneratedPair(t *testing.T) {
	kp := newKeyPair(t)
	pub, err := PublicKey(kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub, kp.Public) {
		t.Errorf("PublicKey(private) = %q, want %q", pub, kp.Public)
	}
	for _, bad := range []string{"", "!!!", base64.StdEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := PublicKey([]byte(bad)); err == nil {
			t.Errorf("PublicKey(%q): no error", bad)
		}
	}
}

func TestSealRoundTripWithGoSDK(t *testing.T) {
	kp := newKeyPair(t)
	values := map[string][]byte{
		"pip_token": []byte("s3cr3t"),
		"ca.crt":    {'a', '\r', '\n', 0, 0xff, 0xfe, 0x80},
		"empty":     {},
	}
	envelope, err := Seal(kp.Public, values)
	if err != nil {
		t.Fatal(err)
	}
	got, err := seal.Unseal(kp.Private, envelope)
	if err != nil {
		t.Fatalf("go-sdk Unseal: %v", err)
	}
	assertValues(t, got, values)

	id, err := seal.KeyID(envelope)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := KeyID(kp.Public)
	if id != want || len(id) != 8 {
		t.Errorf("envelope key_id = %q, want derived %q", id, want)
	}
	env, err := ParseEnvelope(envelope)
	if err != nil {
		t.Fatalf("ParseEnvelope of our own envelope: %v", err)
	}
	if env.PublicKey == string(kp.Public) {
		t.Error("envelope public_key is the recipient key, want the sender's one-off key")
	}

	// Our ring opens it too.
	ring, err := NewKeyRing(kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	got, err = ring.Unseal(envelope)
	if err != nil {
		t.Fatal(err)
	}
	assertValues(t, got, values)
}

func TestSealRejects(t *testing.T) {
	kp := newKeyPair(t)
	tests := []struct {
		name   string
		pub    []byte
		values map[string][]byte
	}{
		{"no values", kp.Public, nil},
		{"bad name", kp.Public, map[string][]byte{"a/b": []byte("x")}},
		{"empty name", kp.Public, map[string][]byte{"": []byte("x")}},
		{"bad key", []byte("short"), map[string][]byte{"a": []byte("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out, err := Seal(tt.pub, tt.values); err == nil {
				t.Errorf("Seal succeeded: %s", out)
			}
		})
	}
}

func TestKeyRingRotation(t *testing.T) {
	shared := readVector(t, "keys/key")
	sealed := readVector(t, "sealed/com.openfaas.secrets")
	fresh := newKeyPair(t)
	freshID, _ := KeyID(fresh.Public)

	t.Run("old key kept", func(t *testing.T) {
		ring, err := NewKeyRing(fresh.Private, shared)
		if err != nil {
			t.Fatal(err)
		}
		if ring.Current().ID != freshID {
			t.Errorf("current = %q, want the first key %q", ring.Current().ID, freshID)
		}
		if ids := ring.IDs(); len(ids) != 2 || ids[0] != freshID || ids[1] != sharedKeyID {
			t.Errorf("IDs = %v", ids)
		}
		got, err := ring.Unseal(sealed)
		if err != nil {
			t.Fatalf("Unseal: %v", err)
		}
		assertValues(t, got, expectedPlaintexts(t))
	})

	t.Run("old key dropped", func(t *testing.T) {
		ring, err := NewKeyRing(fresh.Private)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ring.Unseal(sealed)
		var unknown *UnknownKeyError
		if !errors.As(err, &unknown) {
			t.Fatalf("err = %v (%T), want *UnknownKeyError", err, err)
		}
		if unknown.KeyID != sharedKeyID {
			t.Errorf("UnknownKeyError.KeyID = %q", unknown.KeyID)
		}
		msg := err.Error()
		if !strings.Contains(msg, sharedKeyID) || !strings.Contains(msg, freshID) {
			t.Errorf("message %q should name %s and %s", msg, sharedKeyID, freshID)
		}
	})

	t.Run("no key_id", func(t *testing.T) {
		noID := rewrite(t, "key_id: "+sharedKeyID+"\n", "")
		if id, _ := seal.KeyID(noID); id != "" {
			t.Fatalf("key_id still %q", id)
		}
		ring, _ := NewKeyRing(fresh.Private, shared)
		if _, err := ring.Unseal(noID); err != nil {
			t.Errorf("envelope without key_id: %v", err)
		}
		ring, _ = NewKeyRing(fresh.Private)
		_, err := ring.Unseal(noID)
		var unknown *UnknownKeyError
		if !errors.As(err, &unknown) || !strings.Contains(err.Error(), "(none given)") {
			t.Errorf("err = %v, want *UnknownKeyError saying no key_id was given", err)
		}
	})

	t.Run("no key", func(t *testing.T) {
		if _, err := NewKeyRing(); err == nil {
			t.Error("NewKeyRing(): no error")
		}
		if _, err := NewKeyRing(fresh.Private, []byte("garbage")); err == nil {
			t.Error("NewKeyRing with a bad key: no error")
		}
	})
}

func TestKeyIDHintMismatch(t *testing.T) {
	envelope := oldClientEnvelope(t)
	id, err := seal.KeyID(envelope)
	if err != nil {
		t.Fatal(err)
	}
	if id != "builder-key-1" {
		t.Fatalf("vector key_id = %q, want builder-key-1", id)
	}
	// Whatever position the matching key holds, decryption decides.
	fresh := newKeyPair(t)
	for _, ring := range [][][]byte{
		{readVector(t, "keys/key")},
		{fresh.Private, readVector(t, "keys/key")},
	} {
		r, err := NewKeyRing(ring...)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Unseal(envelope)
		if err != nil {
			t.Fatalf("Unseal: %v", err)
		}
		assertValues(t, got, map[string][]byte{"api_key": []byte("sk-live-literal-value")})
	}

	// Without the key, the error names the hint.
	r, _ := NewKeyRing(fresh.Private)
	_, err = r.Unseal(envelope)
	if err == nil || !strings.Contains(err.Error(), "builder-key-1") {
		t.Errorf("err = %v, want it to name builder-key-1", err)
	}
}

// rewrite replaces the first occurrence of old in the shared sealed file.
func rewrite(t testing.TB, old, new string) []byte {
	t.Helper()
	data := string(readVector(t, "sealed/com.openfaas.secrets"))
	if !strings.Contains(data, old) {
		t.Fatalf("vector has no %q", old)
	}
	return []byte(strings.Replace(data, old, new, 1))
}

func TestTamperedCiphertext(t *testing.T) {
	sealed := readVector(t, "sealed/com.openfaas.secrets")
	env, err := ParseEnvelope(sealed)
	if err != nil {
		t.Fatal(err)
	}
	value := env.Secrets["pip_token"]
	raw, _ := base64.StdEncoding.DecodeString(value)
	raw[len(raw)-1] ^= 0x01
	tampered := rewrite(t, value, base64.StdEncoding.EncodeToString(raw))

	// A tampered nonce fails too.
	raw2, _ := base64.StdEncoding.DecodeString(value)
	raw2[0] ^= 0x80
	tamperedNonce := rewrite(t, value, base64.StdEncoding.EncodeToString(raw2))

	// So does a different sender key.
	other := newKeyPair(t)
	wrongSender := rewrite(t, env.PublicKey, string(other.Public))

	for name, data := range map[string][]byte{"ciphertext": tampered, "nonce": tamperedNonce, "sender key": wrongSender} {
		t.Run(name, func(t *testing.T) {
			got, err := sharedRing(t).Unseal(data)
			if err == nil {
				t.Fatalf("Unseal of tampered envelope succeeded: %q", got)
			}
			if got != nil {
				t.Errorf("values returned with an error: %v", keys(got))
			}
		})
	}
}

func TestParseEnvelopeErrors(t *testing.T) {
	good := string(readVector(t, "sealed/com.openfaas.secrets"))
	env, err := ParseEnvelope([]byte(good))
	if err != nil {
		t.Fatalf("shared vector: %v", err)
	}
	if env.KeyID != sharedKeyID || len(env.Secrets) != 4 {
		t.Errorf("parsed key_id %q with %d secrets", env.KeyID, len(env.Secrets))
	}
	pip := env.Secrets["pip_token"]
	short := base64.StdEncoding.EncodeToString(make([]byte, 23))

	tests := []struct {
		name     string
		envelope string
		wantErr  string
	}{
		{"not yaml", "version: [v1", "invalid sealed envelope"},
		{"not a mapping", "- a\n- b\n", "invalid sealed envelope"},
		{"empty", "", "version"},
		{"version v2", strings.Replace(good, "version: v1", "version: v2", 1), "v2"},
		{"version missing", strings.Replace(good, "version: v1\n", "", 1), "version"},
		{"algorithm other", strings.Replace(good, "algorithm: nacl/box", "algorithm: aes-gcm", 1), "aes-gcm"},
		{"public_key not base64", strings.Replace(good, env.PublicKey, "not~base64!", 1), "public_key"},
		{"public_key 31 bytes", strings.Replace(good, env.PublicKey, base64.StdEncoding.EncodeToString(make([]byte, 31)), 1), "public_key"},
		{"public_key missing", strings.Replace(good, "public_key: "+env.PublicKey+"\n", "", 1), "public_key"},
		{"name with slash", strings.Replace(good, "pip_token:", "a/b:", 1), "a/b"},
		{"name dot-dot", strings.Replace(good, "pip_token:", `"..":`, 1), ".."},
		{"name traversal", strings.Replace(good, "pip_token:", `"../etc":`, 1), "../etc"},
		{"empty name", strings.Replace(good, "pip_token:", `"":`, 1), "empty"},
		{"value shorter than 24 bytes", strings.Replace(good, pip, short, 1), "pip_token"},
		{"value empty", strings.Replace(good, pip, `""`, 1), "pip_token"},
		{"value not base64", strings.Replace(good, pip, "not*base64", 1), "pip_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.envelope == good {
				t.Fatal("test case did not change the vector")
			}
			_, err := ParseEnvelope([]byte(tt.envelope))
			if err == nil {
				t.Fatal("ParseEnvelope: no error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q should mention %q", err, tt.wantErr)
			}
			// The ring refuses it as well, never with values.
			if got, err := sharedRing(t).Unseal([]byte(tt.envelope)); err == nil {
				t.Errorf("KeyRing.Unseal succeeded: %v", keys(got))
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"pip_token", true},
		{"ca.crt", true},
		{"a-b", true},
		{"A1", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/a", false},
		{`a\b`, false},
		{"a b", false},
		{"a\n", false},
		{"a\x00", false},
		{"a=b", false},
		{strings.Repeat("a", 129), false},
		{"é", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if tt.ok && err != nil {
				t.Errorf("ValidateName(%q) = %v, want ok", tt.name, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("ValidateName(%q) = nil, want an error", tt.name)
			}
		})
	}
}

func TestDecodePublicKey(t *testing.T) {
	pub := string(readVector(t, "keys/key.pub"))
	escaped := strings.ReplaceAll(string(readVector(t, "keys/publickey-response.json")), "/", `\/`)
	tests := []struct {
		name    string
		input   string
		wantErr bool
	}{
		{"raw base64", pub, false},
		{"trailing newline", pub + "\n", false},
		{"surrounding whitespace", "  " + pub + "\r\n", false},
		{"publickey response", string(readVector(t, "keys/publickey-response.json")), false},
		{"publickey JSON without algorithm", `{"public_key":"` + pub + `"}`, false},
		{"publickey JSON indented", "{\n  \"public_key\": \"" + pub + "\",\n  \"algorithm\": \"nacl/box\"\n}\n", false},
		{"publickey JSON with escaped slashes", escaped, false},
		{"algorithm other", `{"algorithm":"rsa","public_key":"` + pub + `"}`, true},
		{"JSON without public_key", `{"algorithm":"nacl/box"}`, true},
		{"broken JSON", `{"public_key":`, true},
		{"31-byte key", base64.StdEncoding.EncodeToString(make([]byte, 31)), true},
		{"33-byte key", base64.StdEncoding.EncodeToString(make([]byte, 33)), true},
		{"not base64", "not a key", true},
		{"empty", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodePublicKey([]byte(tt.input))
			if tt.wantErr {
				if err == nil {
					t.Errorf("DecodePublicKey(%q) = %q, want an error", tt.input, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodePublicKey(%q): %v", tt.input, err)
			}
			if string(got) != pub {
				t.Errorf("DecodePublicKey(%q) = %q, want %q", tt.input, got, pub)
			}
		})
	}
}

func TestLoadKeyRing(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "key")
	if err := os.WriteFile(good, append(readVector(t, "keys/key"), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	malformed := filepath.Join(dir, "malformed")
	if err := os.WriteFile(malformed, []byte("this is not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	ring, err := LoadKeyRing(good)
	if err != nil {
		t.Fatalf("LoadKeyRing(good): %v", err)
	}
	if ring.Current().ID != sharedKeyID {
		t.Errorf("loaded key id %q", ring.Current().ID)
	}

	tests := []struct {
		name  string
		paths []string
		want  string
	}{
		{"missing file", []string{missing}, missing},
		{"missing old key", []string{good, missing}, missing},
		{"malformed key", []string{malformed}, malformed},
		{"malformed old key", []string{good, malformed}, malformed},
		{"short key", []string{short}, short},
		{"no paths", nil, "no private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := LoadKeyRing(tt.paths...)
			if err == nil {
				t.Fatalf("LoadKeyRing: no error, ring %v", ring.IDs())
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q should mention %q", err, tt.want)
			}
		})
	}
}

func TestWriteKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a", "b", "key")
	kp := newKeyPair(t)
	if err := WriteKeyFiles(path, kp); err != nil {
		t.Fatal(err)
	}
	files := []struct {
		path    string
		mode    os.FileMode
		content []byte
	}{
		{path, 0o600, kp.Private},
		{path + ".pub", 0o644, kp.Public},
	}
	for _, f := range files {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != f.mode {
			t.Errorf("%s mode %o, want %o", f.path, st.Mode().Perm(), f.mode)
		}
		data, _ := os.ReadFile(f.path)
		if !bytes.Equal(data, f.content) {
			t.Errorf("%s = %q, want %q", f.path, data, f.content)
		}
		if len(data) != 44 || bytes.ContainsAny(data, "\r\n") {
			t.Errorf("%s: want 44 base64 characters and no newline, got %q", f.path, data)
		}
	}
	for _, d := range []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b")} {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %o, want 0700", d, st.Mode().Perm())
		}
	}
	// The written pair loads and works end to end.
	ring, err := LoadKeyRing(path)
	if err != nil {
		t.Fatal(err)
	}
	envelope, err := Seal(kp.Public, map[string][]byte{"x": []byte("y")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ring.Unseal(envelope)
	if err != nil || string(got["x"]) != "y" {
		t.Errorf("round trip through written files: %q, %v", got, err)
	}
}

func FuzzParseEnvelope(f *testing.F) {
	shared := readVector(f, "sealed/com.openfaas.secrets")
	f.Add(shared)
	f.Add(readVector(f, "faas-cli-sealed-test/com.openfaas.secrets"))
	f.Add(oldClientEnvelope(f))
	f.Add([]byte(""))
	f.Add([]byte("version: v1\nalgorithm: nacl/box\n"))
	f.Add([]byte("version: v1\nalgorithm: nacl/box\npublic_key: kO2wtJ4BjCpQKFpvfW3rlKzBN99sYd9bhXQajwhGghU=\nsecrets:\n    a: AAAA\n"))
	f.Add([]byte("version: v1\nalgorithm: nacl/box\npublic_key: kO2wtJ4BjCpQKFpvfW3rlKzBN99sYd9bhXQajwhGghU=\nsecrets:\n    ../x: \n"))
	f.Add([]byte("version: [v1\n"))
	f.Add([]byte("secrets: {a: [1, 2]}\n"))
	f.Add(bytes.Replace(shared, []byte("v1"), []byte("v2"), 1))

	ring, err := NewKeyRing(readVector(f, "keys/key"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := ParseEnvelope(data)
		if err != nil {
			return
		}
		// What ParseEnvelope accepts is safe to hand to BuildKit by name.
		for name := range env.Secrets {
			if ValidateName(name) != nil {
				t.Fatalf("accepted invalid name %q", name)
			}
		}
		values, err := ring.Unseal(data)
		if err != nil {
			if values != nil {
				t.Fatalf("values returned with error %v", err)
			}
			return
		}
		if len(values) != len(env.Secrets) {
			t.Fatalf("unsealed %d values, envelope has %d", len(values), len(env.Secrets))
		}
	})
}
