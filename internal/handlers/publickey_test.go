package handlers_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

// keyVectors is the shared folder of wire vectors captured with the real clients.
const keyVectors = "../../../shared/vectors"

const vectorKeyID = "7OoESESw"

func readKeyVector(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(keyVectors, rel))
	if err != nil {
		t.Fatalf("read vector: %v", err)
	}
	return data
}

// secretMount makes a secret_mount_path holding the given secret files and
// returns the key loader the functions build from that configuration.
func secretMount(t *testing.T, files map[string][]byte) (string, handlers.KeyLoader) {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, secrets.KeyRingLoader(config.FromMap(map[string]string{"secret_mount_path": dir}).PrivateKeyPaths()...)
}

// assertFailedBody checks the common error body {"status":"failed","error":...}
// and returns the error text.
func assertFailedBody(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", rec.Body.String(), err)
	}
	if body["status"] != "failed" {
		t.Errorf("status = %v, want \"failed\" (body %s)", body["status"], rec.Body.String())
	}
	msg, _ := body["error"].(string)
	if msg == "" {
		t.Errorf("error body has no error text: %s", rec.Body.String())
	}
	return msg
}

func TestPublicKeyServesVector(t *testing.T) {
	_, load := secretMount(t, map[string][]byte{config.BuildSecretsKeyName: readKeyVector(t, "keys/key")})
	h := handlers.MakePublicKeyHandler(load)

	var want map[string]any
	if err := json.Unmarshal(readKeyVector(t, "keys/publickey-response.json"), &want); err != nil {
		t.Fatal(err)
	}
	if want["key_id"] != vectorKeyID {
		t.Fatalf("vector key_id = %v", want["key_id"])
	}

	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, "/publickey", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET status %d: %s", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET body = %v, want %v", got, want)
	}

	// What we serve is what faas-cli's --builder-public-key accepts.
	pub, err := secrets.DecodePublicKey(rec.Body.Bytes())
	if err != nil || string(pub) != string(readKeyVector(t, "keys/key.pub")) {
		t.Errorf("served document decodes to %q, %v", pub, err)
	}

	rec = httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodHead, "/publickey", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("HEAD status %d", rec.Code)
	}
}

func TestPublicKeyMethods(t *testing.T) {
	_, load := secretMount(t, map[string][]byte{config.BuildSecretsKeyName: readKeyVector(t, "keys/key")})
	h := handlers.MakePublicKeyHandler(load)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		t.Run(method, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h(rec, httptest.NewRequest(method, "/publickey", strings.NewReader("{}")))
			if rec.Code != http.StatusMethodNotAllowed {
				t.Fatalf("status %d, want 405", rec.Code)
			}
			if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "GET") {
				t.Errorf("Allow = %q, want it to list GET", allow)
			}
			assertFailedBody(t, rec)
		})
	}
}

func TestPublicKeyBadKey(t *testing.T) {
	tests := []struct {
		name  string
		files map[string][]byte
		want  []string
	}{
		{"missing key", nil, []string{config.BuildSecretsKeyName}},
		{"malformed key", map[string][]byte{config.BuildSecretsKeyName: []byte("not a key")}, []string{config.BuildSecretsKeyName, "private key"}},
		{"short key", map[string][]byte{config.BuildSecretsKeyName: []byte("AAAA")}, []string{config.BuildSecretsKeyName}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, load := secretMount(t, tt.files)
			rec := httptest.NewRecorder()
			handlers.MakePublicKeyHandler(load)(rec, httptest.NewRequest(http.MethodGet, "/publickey", nil))
			if rec.Code != http.StatusInternalServerError {
				t.Fatalf("status %d, want 500: %s", rec.Code, rec.Body.String())
			}
			msg := assertFailedBody(t, rec)
			want := append([]string{filepath.Join(dir, config.BuildSecretsKeyName)}, tt.want...)
			for _, w := range want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q should mention %q", msg, w)
				}
			}
		})
	}
}

func TestPublicKeyRotation(t *testing.T) {
	fresh, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := secretMount(t, map[string][]byte{
		"build-secrets-key-new": fresh.Private,
		"build-secrets-key":     readKeyVector(t, "keys/key"),
	})
	load := secrets.KeyRingLoader(config.FromMap(map[string]string{
		"secret_mount_path":       dir,
		"build_secrets_key_names": "build-secrets-key-new,build-secrets-key",
	}).PrivateKeyPaths()...)
	h := handlers.MakePublicKeyHandler(load)

	get := func() handlers.PublicKeyResponse {
		t.Helper()
		rec := httptest.NewRecorder()
		h(rec, httptest.NewRequest(http.MethodGet, "/publickey", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		var resp handlers.PublicKeyResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	freshID, _ := secrets.KeyID(fresh.Public)
	if got := get(); got.PublicKey != string(fresh.Public) || got.KeyID != freshID || got.Algorithm != "nacl/box" {
		t.Errorf("served %+v, want the first (current) key %s", got, freshID)
	}

	// The key file is read per request: a rotated secret needs no restart.
	next, _ := secrets.GenerateKeyPair()
	if err := os.WriteFile(filepath.Join(dir, "build-secrets-key-new"), next.Private, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := get(); got.PublicKey != string(next.Public) {
		t.Errorf("after rotation served %q, want %q", got.PublicKey, next.Public)
	}
}
