package handlers_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openfaas/go-sdk/seal"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

const sealTestMaxBody = 1 << 20

func postSeal(t *testing.T, h http.HandlerFunc, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h(rec, req)
	return rec
}

func sealRequestJSON(t *testing.T, req handlers.SealRequest) string {
	t.Helper()
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// assertSealed checks a successful seal reply and returns the envelope.
func assertSealed(t *testing.T, rec *httptest.ResponseRecorder, keyID string) []byte {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type = %q, want application/yaml", ct)
	}
	if got := rec.Header().Get("X-Key-Id"); got != keyID {
		t.Errorf("X-Key-Id = %q, want %q", got, keyID)
	}
	if cd := rec.Header().Get("Content-Disposition"); !strings.Contains(cd, "com.openfaas.secrets") {
		t.Errorf("Content-Disposition = %q, want the com.openfaas.secrets file name", cd)
	}
	envelope := rec.Body.Bytes()
	if id, err := seal.KeyID(envelope); err != nil || id != keyID {
		t.Errorf("envelope key_id = %q, %v; want %q", id, err, keyID)
	}
	return envelope
}

func TestSealForBuilderKey(t *testing.T) {
	privateKey := readKeyVector(t, "keys/key")
	_, load := secretMount(t, map[string][]byte{config.BuildSecretsKeyName: privateKey})
	h := handlers.MakeSealHandler(load, sealTestMaxBody)

	binary := []byte{'-', '-', '\r', '\n', 0x00, 0x01, 0xff, 0xfe, 0x80, '\n'}
	rec := postSeal(t, h, sealRequestJSON(t, handlers.SealRequest{
		Secrets: map[string]string{
			"pip_token": "s3cr3t-shared-pip",
			"db_url":    "postgres://user:p@ss=w0rd@db:5432/app?sslmode=require",
			"unicode":   "héllo ✓",
			"empty":     "",
		},
		SecretsBase64: map[string]string{
			"ca.crt":    base64.StdEncoding.EncodeToString(binary),
			"nul":       base64.StdEncoding.EncodeToString([]byte{0}),
			"empty_b64": "",
		},
	}))
	envelope := assertSealed(t, rec, vectorKeyID)

	// The reference implementation faas-cli uses opens it with the builder key.
	got, err := seal.Unseal(privateKey, envelope)
	if err != nil {
		t.Fatalf("go-sdk Unseal: %v\n%s", err, envelope)
	}
	want := map[string][]byte{
		"pip_token": []byte("s3cr3t-shared-pip"),
		"db_url":    []byte("postgres://user:p@ss=w0rd@db:5432/app?sslmode=require"),
		"unicode":   []byte("héllo ✓"),
		"empty":     {},
		"ca.crt":    binary,
		"nul":       {0},
		"empty_b64": {},
	}
	if len(got) != len(want) {
		t.Errorf("unsealed %d values, want %d", len(got), len(want))
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || !bytes.Equal(g, w) {
			t.Errorf("%s = %q (present %v), want %q", name, g, ok, w)
		}
	}
	if strings.Contains(string(envelope), "s3cr3t") {
		t.Error("envelope holds a plaintext value")
	}
	// And the builder's own ring, as build-fn uses it.
	ring, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.Unseal(envelope); err != nil {
		t.Errorf("KeyRing.Unseal: %v", err)
	}
}

func TestSealForGivenKey(t *testing.T) {
	fresh, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	freshID, _ := secrets.KeyID(fresh.Public)
	doc, _ := json.Marshal(handlers.PublicKeyResponse{KeyID: freshID, Algorithm: "nacl/box", PublicKey: string(fresh.Public)})

	// The builder's own key is configured, but the given one wins.
	_, withKey := secretMount(t, map[string][]byte{config.BuildSecretsKeyName: readKeyVector(t, "keys/key")})
	// Without a configured key, a given key is all that is needed.
	_, noKey := secretMount(t, nil)

	tests := []struct {
		name      string
		load      handlers.KeyLoader
		publicKey string
	}{
		{"raw base64", withKey, string(fresh.Public)},
		{"raw base64 with newline", withKey, string(fresh.Public) + "\n"},
		{"publickey JSON", withKey, string(doc)},
		{"no builder key", noKey, string(fresh.Public)},
		{"no builder key, JSON", noKey, string(doc)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := postSeal(t, handlers.MakeSealHandler(tt.load, sealTestMaxBody), sealRequestJSON(t, handlers.SealRequest{
				Secrets:   map[string]string{"api_key": "sk-live-1"},
				PublicKey: tt.publicKey,
			}))
			envelope := assertSealed(t, rec, freshID)
			got, err := seal.Unseal(fresh.Private, envelope)
			if err != nil {
				t.Fatalf("go-sdk Unseal with the given key: %v", err)
			}
			if string(got["api_key"]) != "sk-live-1" || len(got) != 1 {
				t.Errorf("unsealed %q", got)
			}
			if _, err := seal.Unseal(readKeyVector(t, "keys/key"), envelope); err == nil {
				t.Error("the builder's own key opens an envelope sealed for another key")
			}
		})
	}
}

func TestSealErrors(t *testing.T) {
	_, withKey := secretMount(t, map[string][]byte{config.BuildSecretsKeyName: readKeyVector(t, "keys/key")})
	dir, noKey := secretMount(t, nil)
	fresh, _ := secrets.GenerateKeyPair()
	ok := `{"secrets":{"a":"b"}}`

	tests := []struct {
		name    string
		load    handlers.KeyLoader
		maxBody int64
		method  string
		body    string
		code    int
		want    string
	}{
		{name: "GET", method: http.MethodGet, body: "", code: 405},
		{name: "PUT", method: http.MethodPut, body: ok, code: 405},
		{name: "invalid JSON", body: `{"secrets":`, code: 400, want: "JSON"},
		{name: "not an object", body: `["a"]`, code: 400},
		{name: "empty body", body: "", code: 400},
		{name: "unknown field", body: `{"secrets":{"a":"b"},"secret":{"c":"d"}}`, code: 400, want: "secret"},
		{name: "no secrets", body: `{}`, code: 400, want: "no secrets"},
		{name: "empty maps", body: `{"secrets":{},"secrets_base64":{}}`, code: 400, want: "no secrets"},
		{name: "empty name", body: `{"secrets":{"":"v"}}`, code: 400, want: "empty"},
		{name: "name with slash", body: `{"secrets":{"a/b":"v"}}`, code: 400, want: "a/b"},
		{name: "name dot-dot", body: `{"secrets_base64":{"..":"AA=="}}`, code: 400, want: ".."},
		{name: "bad base64", body: `{"secrets_base64":{"bin":"%%%"}}`, code: 400, want: "bin"},
		{name: "name in both maps", body: `{"secrets":{"a":"x"},"secrets_base64":{"a":"eA=="}}`, code: 400, want: `"a"`},
		{name: "bad public_key", body: `{"secrets":{"a":"b"},"public_key":"not-a-key"}`, code: 400, want: "public key"},
		{name: "short public_key", body: `{"secrets":{"a":"b"},"public_key":"AAAA"}`, code: 400},
		{name: "public_key JSON other algorithm", body: sealRequestJSON(t, handlers.SealRequest{
			Secrets:   map[string]string{"a": "b"},
			PublicKey: `{"algorithm":"rsa","public_key":"` + string(fresh.Public) + `"}`,
		}), code: 400, want: "rsa"},
		{name: "bad public_key without builder key", load: noKey, body: `{"secrets":{"a":"b"},"public_key":"x"}`, code: 400},
		{name: "body over the limit", maxBody: 64, body: `{"secrets":{"a":"` + strings.Repeat("x", 200) + `"}}`, code: 413},
		{name: "no key configured", load: noKey, body: ok, code: 500, want: dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			load, maxBody, method := tt.load, tt.maxBody, tt.method
			if load == nil {
				load = withKey
			}
			if maxBody == 0 {
				maxBody = sealTestMaxBody
			}
			if method == "" {
				method = http.MethodPost
			}
			rec := httptest.NewRecorder()
			handlers.MakeSealHandler(load, maxBody)(rec, httptest.NewRequest(method, "/", strings.NewReader(tt.body)))
			if rec.Code != tt.code {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.code, rec.Body.String())
			}
			msg := assertFailedBody(t, rec)
			if tt.want != "" && !strings.Contains(msg, tt.want) {
				t.Errorf("error %q should mention %q", msg, tt.want)
			}
			if tt.code == 405 && rec.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want POST", rec.Header().Get("Allow"))
			}
			if rec.Header().Get("X-Key-Id") != "" {
				t.Error("an error reply carries X-Key-Id")
			}
		})
	}
}

func TestSealLoaderNotCalledWithGivenKey(t *testing.T) {
	fresh, _ := secrets.GenerateKeyPair()
	called := false
	load := func() (*secrets.KeyRing, error) {
		called = true
		return nil, errors.New("no key")
	}
	rec := postSeal(t, handlers.MakeSealHandler(load, sealTestMaxBody), sealRequestJSON(t, handlers.SealRequest{
		Secrets:   map[string]string{"a": "b"},
		PublicKey: string(fresh.Public),
	}))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	if called {
		t.Error("the key loader was called although public_key was given")
	}
}
