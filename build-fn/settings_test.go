package function

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// settings returns a map that keeps Options away from the host: no
// registry credentials from $HOME, no secrets from /var/openfaas.
func settings(t *testing.T, extra map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	m := map[string]string{
		"secret_mount_path":    dir,
		"registry_config_path": filepath.Join(dir, "no-such-config.json"),
		"work_dir":             t.TempDir(),
		"results_dir":          t.TempDir(),
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func TestOptionsDefaults(t *testing.T) {
	o, err := Options(config.FromMap(settings(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if o.Timeout != 30*time.Minute {
		t.Errorf("Timeout %v, want 30m", o.Timeout)
	}
	if o.Slots.Max() != 0 || o.Slots.Full() {
		t.Errorf("Slots %+v, want unlimited", o.Slots)
	}
	if o.DisableHMAC {
		t.Error("HMAC disabled by default")
	}
	if o.KeepAlive != 15*time.Second {
		t.Errorf("KeepAlive %v", o.KeepAlive)
	}
	if o.MaxBodyBytes != 512<<20 {
		t.Errorf("MaxBodyBytes %d", o.MaxBodyBytes)
	}
	if o.Unverified.Max() != 512<<20 || o.UploadTimeout != 5*time.Minute {
		t.Errorf("unverified budget %d, upload timeout %v; want 512 MiB and 5m", o.Unverified.Max(), o.UploadTimeout)
	}
	if o.Pipeline == nil || o.Pipeline.Runner == nil || o.Pipeline.Keys == nil || o.Metrics == nil || o.Tenants == nil {
		t.Fatalf("options not wired: %+v", o)
	}
	if m := o.SpoolMemory; m == nil || m.PerBody != 4<<20 || m.Total() != 32<<20 {
		t.Errorf("SpoolMemory %+v, want 4 MiB per body, 32 MiB in all", m)
	}
}

func TestOptionsValues(t *testing.T) {
	m := settings(t, map[string]string{
		"max_inflight":       "3",
		"build_timeout":      "90",
		"keepalive_interval": "2s",
		"disable_hmac":       "true",
		"max_request_bytes":  "1024",
		"spool_memory_bytes": "0",
	})
	payload := filepath.Join(m["secret_mount_path"], "payload-secret")
	if err := os.WriteFile(payload, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := Options(config.FromMap(m))
	if err != nil {
		t.Fatal(err)
	}
	if o.Slots.Max() != 3 {
		t.Errorf("Slots.Max() = %d, want 3", o.Slots.Max())
	}
	if o.Timeout != 90*time.Second || o.KeepAlive != 2*time.Second || !o.DisableHMAC || o.MaxBodyBytes != 1024 || o.SpoolMemory != nil {
		t.Errorf("options %+v", o)
	}
	tenants, keys, err := o.Tenants.Candidates("")
	if err != nil || len(tenants) != 1 || tenants[0].Name != tenant.ImplicitName || string(keys[0]) != "abc" {
		t.Errorf("Tenants = %v, %q, %v; want the implicit tenant with the payload secret", tenants, keys, err)
	}
}

func TestOptionsBadValues(t *testing.T) {
	for name, value := range map[string]string{
		"max_inflight":                  "abc",
		"build_timeout":                 "xyz",
		"disable_hmac":                  "maybe",
		"keepalive_interval":            "soon",
		"max_request_bytes":             "1MB",
		"max_context_bytes":             "lots",
		"max_context_entries":           "many",
		"insecure":                      "perhaps",
		"max_unverified_bytes":          "half",
		"upload_timeout":                "later",
		"allow_private_fetch_redirects": "sometimes",
		"spool_memory_bytes":            "some",
	} {
		_, err := Options(config.FromMap(settings(t, map[string]string{name: value})))
		if err == nil {
			t.Errorf("%s=%q accepted", name, value)
			continue
		}
		if !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: error %q does not name the setting", name, value, err)
		}
	}
}

func TestUploadLimits(t *testing.T) {
	o, err := Options(config.FromMap(settings(t, map[string]string{
		"max_unverified_bytes": "4096", "max_request_bytes": "1024", "upload_timeout": "30",
	})))
	if err != nil {
		t.Fatal(err)
	}
	if o.Unverified.Max() != 4096 || o.UploadTimeout != 30*time.Second {
		t.Errorf("budget %d, upload timeout %v", o.Unverified.Max(), o.UploadTimeout)
	}
	if o, err = Options(config.FromMap(settings(t, map[string]string{"max_unverified_bytes": "0", "upload_timeout": "0"}))); err != nil {
		t.Fatal(err)
	} else if o.Unverified != nil || o.UploadTimeout != 0 {
		t.Errorf("0 did not turn the limits off: %+v %v", o.Unverified, o.UploadTimeout)
	}
	for _, bad := range []map[string]string{
		// A body allowed by max_request_bytes could never be received.
		{"max_unverified_bytes": "1023", "max_request_bytes": "1024"},
		{"max_unverified_bytes": "1048576"}, // below the 512 MiB default request limit
		{"upload_timeout": "-1s"},
	} {
		_, err := Options(config.FromMap(settings(t, bad)))
		if err == nil {
			t.Errorf("%v accepted", bad)
			continue
		}
		for name := range bad {
			if name != "max_request_bytes" && !strings.Contains(err.Error(), name) {
				t.Errorf("%v: error %q does not name %s", bad, err, name)
			}
		}
	}
}

func TestRouter(t *testing.T) {
	m := settings(t, nil)
	kp, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if err := secrets.WriteKeyFiles(filepath.Join(m["secret_mount_path"], "build-secrets-key"), kp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m["secret_mount_path"], "payload-secret"), []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.FromMap(m)
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	call := func(method, path string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader("not a tar"))
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, body
	}

	// Both build paths reach the build handler, which wants a signature.
	for _, path := range []string{"/build", "/"} {
		res, body := call(http.MethodPost, path)
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s: %d, want 401 from the build handler: %s", path, res.StatusCode, body)
			continue
		}
		var e struct{ Status, Error string }
		if err := json.Unmarshal(body, &e); err != nil || e.Status != "failed" || !strings.Contains(e.Error, "X-Build-Signature") {
			t.Errorf("POST %s: body %q", path, body)
		}
	}
	if res, _ := call(http.MethodGet, "/build"); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /build: %d, want 405", res.StatusCode)
	}

	for _, path := range []string{"/publickey", "/public-key"} {
		res, body := call(http.MethodGet, path)
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d: %s", path, res.StatusCode, body)
			continue
		}
		var doc struct {
			KeyID     string `json:"key_id"`
			Algorithm string `json:"algorithm"`
			PublicKey string `json:"public_key"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("GET %s: %v: %q", path, err, body)
		}
		if doc.PublicKey != string(kp.Public) || doc.Algorithm != "nacl/box" || doc.KeyID != string(kp.Public[:8]) {
			t.Errorf("GET %s: %+v, want key %s", path, doc, kp.Public)
		}
	}

	if res, body := call(http.MethodGet, "/healthz"); res.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %d %s", res.StatusCode, body)
	}
	if res, body := call(http.MethodGet, "/ready"); res.StatusCode != http.StatusOK {
		t.Errorf("/ready: %d %s", res.StatusCode, body)
	}
	res, body := call(http.MethodGet, "/metrics")
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("/metrics: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	// The POSTs above were counted.
	if !strings.Contains(string(body), `fnbuilder_http_requests_total{code="401"} 2`) {
		t.Errorf("/metrics does not count the 401s:\n%s", body)
	}
	for _, path := range []string{"/nope", "/build/extra", "/function/build-fn"} {
		if res, _ := call(http.MethodGet, path); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, res.StatusCode)
		}
	}
}

// TestNewPrunesExpiredResults: the handler build-fn runs removes expired
// results on a timer, with no request to trigger it.
func TestNewPrunesExpiredResults(t *testing.T) {
	m := settings(t, map[string]string{"results_ttl": "1s"})
	expired := filepath.Join(m["results_dir"], "expired-call.json")
	if err := os.WriteFile(expired, []byte(`{"code":200,"body":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(expired, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := New(config.FromMap(m)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the expired result to be pruned (results_ttl 1s)", func() error {
		if _, err := os.Stat(expired); !os.IsNotExist(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

func TestRouterPublicKeyWithoutKey(t *testing.T) {
	cfg := config.FromMap(settings(t, nil))
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/publickey", nil))
	if rec.Code == http.StatusOK {
		t.Fatalf("/publickey answered 200 with no key configured: %s", rec.Body)
	}
	if !strings.Contains(rec.Body.String(), `"status":"failed"`) {
		t.Fatalf("body %q", rec.Body)
	}
}

func TestOptionsTenants(t *testing.T) {
	m := settings(t, nil)
	file := filepath.Join(t.TempDir(), "tenants.yaml")
	writeFile := func(body string) {
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(`tenants:
  acme:
    payload_secret: payload-secret-acme
    images: ["registry.example.com/acme/"]
    base_images: ["registry.example.com/library/"]
    namespaces: ["openfaas-fn"]
    secrets: ["acme-*"]
  bob:
    payload_secret: payload-secret-bob
    images: ["ghcr.io/bob/"]
`)
	for name, key := range map[string]string{"payload-secret-acme": "a", "payload-secret-bob": "b"} {
		if err := os.WriteFile(filepath.Join(m["secret_mount_path"], name), []byte(key), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m["tenants_file"] = file
	o, err := Options(config.FromMap(m))
	if err != nil {
		t.Fatal(err)
	}
	tenants, _, err := o.Tenants.Candidates("")
	if err != nil || len(tenants) != 2 || tenants[0].Name != "acme" || tenants[1].Name != "bob" {
		t.Fatalf("tenants %v, %v", tenants, err)
	}
	// No tenant's function may mount a payload secret, the private key or
	// the registry and gateway credentials.
	for _, s := range []string{"payload-secret", "payload-secret-acme", "payload-secret-bob", "build-secrets-key", "registry-config", "basic-auth-password", "buildkit-tls-key"} {
		if !slices.Contains(o.Pipeline.Deploy.ReservedSecrets, s) {
			t.Errorf("secret %s is not reserved: %v", s, o.Pipeline.Deploy.ReservedSecrets)
		}
	}
	if !slices.Contains(o.Pipeline.Deploy.ReservedFunctions, "build-fn") || o.Pipeline.Deploy.DefaultNamespace != "openfaas-fn" {
		t.Errorf("deploy policy %+v", o.Pipeline.Deploy)
	}

	// A tenants file is refused loudly, naming the problem.
	for body, want := range map[string]string{
		"tenants:\n  acme:\n    payload_secret: k\n    imagez: []\n":                           "imagez",
		"tenants:\n  Acme:\n    payload_secret: k\n":                                           "DNS label",
		"tenants:\n  a:\n    payload_secret: k\n  b:\n    payload_secret: k\n":                 "share payload secret",
		"tenants:\n  a:\n    payload_secret: k\n    images: [\"registry.example.com/acme\"]\n": "ending in",
		"tenants:\n  a:\n    payload_secret: k\n    images: [\"acme/\"]\n":                     "full form",
		"tenants:\n  a:\n    payload_secret: k\n    secrets: [\"*\"]\n":                        "non-empty prefix",
		"tenants: {}\n": "no tenants",
	} {
		writeFile(body)
		if _, err := Options(config.FromMap(m)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("tenants file %q: error %v, want one naming %q", body, err, want)
		}
	}
	m["disable_hmac"] = "true"
	writeFile("tenants:\n  a:\n    payload_secret: k\n")
	if _, err := Options(config.FromMap(m)); err == nil || !strings.Contains(err.Error(), "disable_hmac") {
		t.Errorf("disable_hmac with a tenants file: %v", err)
	}
}

// The registries the builder reaches insecurely, keeps its cache on or
// serves tenants from are guarded; builds read config.json themselves.
func TestGuardedRegistries(t *testing.T) {
	m := settings(t, nil)
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfgPath, []byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"eDp5"},"registry.example.com":{"auth":"eDp5"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(file, []byte("tenants:\n  a:\n    payload_secret: k\n    images: [\"ghcr.io/a/\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m["registry_config_path"] = cfgPath
	m["insecure_registries"] = "127.0.0.1:5000"
	m["cache_repo"] = "cache.internal:5000/buildcache"
	m["tenants_file"] = file
	m["frontend_images"] = "docker/dockerfile:1.10"
	tenants, err := config.FromMap(m).Tenants()
	if err != nil {
		t.Fatal(err)
	}
	builders, err := newBuilders(config.FromMap(m), tenants)
	if err != nil {
		t.Fatal(err)
	}
	regs := builders[0].Registries()
	// Those of config.json are added by each build, from its own read of
	// the file (internal/buildkit TestCredentialsAreReadForEveryBuild).
	want := []string{"127.0.0.1:5000", "cache.internal:5000", "ghcr.io"}
	if !slices.Equal(regs.Guarded, want) || regs.AuthPath != cfgPath {
		t.Errorf("guarded %v, config.json %q: want %v, %s", regs.Guarded, regs.AuthPath, want, cfgPath)
	}
	if !slices.Equal(regs.Frontends, []string{"docker.io/docker/dockerfile:1.10"}) {
		t.Errorf("frontends %v", regs.Frontends)
	}
	m["frontend_images"] = "Not An Image"
	if _, err := newBuilders(config.FromMap(m), tenants); err == nil || !strings.Contains(err.Error(), "frontend_images") {
		t.Errorf("a bad frontend image: %v", err)
	}
	m["frontend_images"] = ""
	// Builds read the file again, but one that is broken at start is a
	// setting error.
	if err := os.WriteFile(cfgPath, []byte(`{"auths": `), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newBuilders(config.FromMap(m), tenants); err == nil || !strings.Contains(err.Error(), cfgPath) {
		t.Errorf("a malformed config.json at start: %v, want an error naming it", err)
	}
}

// of-watchdog reads max_inflight too: under it (fprocess set) build-fn
// refuses the name and wants max_builds, which the watchdog ignores.
func TestMaxBuildsUnderTheWatchdog(t *testing.T) {
	for _, c := range []struct {
		settings map[string]string
		want     int
		err      string
	}{
		{map[string]string{"max_builds": "3"}, 3, ""},
		{map[string]string{"max_inflight": "2"}, 2, ""},
		{map[string]string{"max_builds": "4", "max_inflight": "2", "fprocess": "./handler"}, 4, ""},
		{map[string]string{"max_inflight": "2", "fprocess": "./handler"}, 0, "max_builds"},
	} {
		o, err := Options(config.FromMap(settings(t, c.settings)))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want one naming %s", c.settings, err, c.err)
			}
			continue
		}
		if err != nil || o.Slots.Max() != c.want {
			t.Errorf("%v: %v, max %d, want %d", c.settings, err, o.Slots.Max(), c.want)
		}
	}
}

// A stream's first byte waits only where of-watchdog proxies it.
func TestStreamHoldUnderTheWatchdog(t *testing.T) {
	for _, c := range []struct {
		settings map[string]string
		want     time.Duration
	}{
		{map[string]string{}, 0},
		{map[string]string{"fprocess": "./handler"}, 100 * time.Millisecond},
		{map[string]string{"fprocess": "./handler", "stream_hold": "0"}, 0},
		{map[string]string{"stream_hold": "250ms"}, 250 * time.Millisecond},
	} {
		o, err := Options(config.FromMap(settings(t, c.settings)))
		if err != nil || o.StreamHold != c.want {
			t.Errorf("%v: %v, hold %s, want %s", c.settings, err, o.StreamHold, c.want)
		}
	}
}
