package handlers_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// Two tenants, each with its own key. The images are open to both, so
// that these tests see only how a request finds its tenant.
var twoTenantKeys = map[string]string{"payload-secret-acme": "acme-key", "payload-secret-bob": "bob-key"}

func withTwoTenants(o *handlers.BuildOptions) {
	tenants := []tenant.Tenant{
		{Name: "acme", PayloadSecret: "payload-secret-acme", Unrestricted: true},
		{Name: "bob", PayloadSecret: "payload-secret-bob", Unrestricted: true},
	}
	o.Tenants = tenant.NewDirectory(tenants, func(secret string) ([]byte, error) { return []byte(twoTenantKeys[secret] + "\n"), nil })
}

// tenantRecorder runs builds, remembering which tenant each ran as.
type tenantRecorder struct {
	mu      sync.Mutex
	tenants []string
}

func (r *tenantRecorder) run(_ context.Context, b buildkit.Build, logf func([]string)) error {
	r.mu.Lock()
	r.tenants = append(r.tenants, b.Tenant)
	r.mu.Unlock()
	logf([]string{"l: built for " + b.Tenant})
	return nil
}

func (f *fixture) postAs(body []byte, key, named string) (*http.Response, []byte) {
	f.t.Helper()
	req := f.request(nil, http.MethodPost, body, "")
	req.Header.Set("X-Build-Signature", testenv.Sign([]byte(key), body))
	if named != "" {
		req.Header.Set(handlers.TenantHeader, named)
	}
	return f.read(req)
}

// The key that verifies a request names its tenant; a header may narrow
// the search to one key, and then only that key verifies.
func TestTheSigningKeyNamesTheTenant(t *testing.T) {
	rec := &tenantRecorder{}
	f := newFixture(t, rec.run, withTwoTenants)
	body := makeTar(t)
	for _, tc := range []struct {
		key, named string
		code       int
		tenant     string
	}{
		{"acme-key", "", http.StatusOK, "acme"},
		{"bob-key", "", http.StatusOK, "bob"},
		{"bob-key", "bob", http.StatusOK, "bob"},
		{"bob-key", "acme", http.StatusUnauthorized, ""},
		{"acme-key", "nobody", http.StatusUnauthorized, ""},
		{"no-ones-key", "", http.StatusUnauthorized, ""},
	} {
		rec.tenants = nil
		res, data := f.postAs(body, tc.key, tc.named)
		if res.StatusCode != tc.code {
			t.Fatalf("key %s, header %q: status %d %s, want %d", tc.key, tc.named, res.StatusCode, data, tc.code)
		}
		if tc.tenant == "" {
			if len(rec.tenants) != 0 {
				t.Fatalf("key %s, header %q: built as %v", tc.key, tc.named, rec.tenants)
			}
			continue
		}
		if len(rec.tenants) != 1 || rec.tenants[0] != tc.tenant {
			t.Fatalf("key %s, header %q: built as %v, want %s", tc.key, tc.named, rec.tenants, tc.tenant)
		}
	}
}

// A call id belongs to the tenant that used it: another tenant using the
// same id builds its own request and cannot read the first one's result.
func TestResultsArePerTenant(t *testing.T) {
	rec := &tenantRecorder{}
	f := newFixture(t, rec.run, withTwoTenants, withResults(t))
	rs := f.resultServer()
	acmeBody, bobBody := makeTar(t), makeTar(t, testenv.File("context/bob.txt", "bob"))

	for _, sent := range []struct {
		body []byte
		key  string
	}{{acmeBody, "acme-key"}, {bobBody, "bob-key"}} {
		req := f.withCallID(sent.body, "", asyncCallID)
		req.Header.Set("X-Build-Signature", testenv.Sign([]byte(sent.key), sent.body))
		res := f.do(req)
		data, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || res.Header.Get("X-Fnbuilder-Replayed") != "" {
			t.Fatalf("%s: status %d, replayed %q: %s", sent.key, res.StatusCode, res.Header.Get("X-Fnbuilder-Replayed"), data)
		}
	}
	if len(rec.tenants) != 2 || rec.tenants[0] != "acme" || rec.tenants[1] != "bob" {
		t.Fatalf("built as %v, want acme then bob", rec.tenants)
	}
	for key, want := range map[string]string{"acme-key": "built for acme", "bob-key": "built for bob"} {
		res, data := getResult(t, rs, asyncCallID, testenv.Sign([]byte(key), []byte(asyncCallID)))
		if res.StatusCode != http.StatusOK || !strings.Contains(string(data), want) {
			t.Fatalf("%s fetched %d %s, want its own result (%s)", key, res.StatusCode, data, want)
		}
	}
	// A third tenant-less key sees nothing at all.
	if res, _ := getResult(t, rs, asyncCallID, testenv.Sign([]byte("no-ones-key"), []byte(asyncCallID))); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown key fetched with status %d", res.StatusCode)
	}
}

// On a BuildKit without its process sandbox, tenants take turns: a build
// of another tenant waits (429) while one runs, one of the same tenant
// does not.
func TestOneTenantAtATime(t *testing.T) {
	b := newBlocking()
	slots := schedule.New(0, 0)
	slots.OneTenantAtATime(true)
	f := newFixture(t, b.run, withTwoTenants, func(o *handlers.BuildOptions) { o.Slots = slots })
	body := makeTar(t)

	first := f.request(nil, http.MethodPost, body, ndjson)
	first.Header.Set("X-Build-Signature", testenv.Sign([]byte("acme-key"), body))
	firstRes := f.do(first)
	b.waitStarted(t)

	res, data := f.postAs(body, "bob-key", "")
	e := checkErrorReply(t, res, data, http.StatusTooManyRequests)
	if !strings.Contains(e.Error, "another tenant") || res.Header.Get("Retry-After") == "" {
		t.Fatalf("429 %q, Retry-After %q", e.Error, res.Header.Get("Retry-After"))
	}
	second := f.request(nil, http.MethodPost, body, ndjson)
	second.Header.Set("X-Build-Signature", testenv.Sign([]byte("acme-key"), body))
	secondRes := f.do(second)
	b.waitStarted(t) // the same tenant's second build runs beside the first

	close(b.release)
	for _, r := range []*http.Response{firstRes, secondRes} {
		rest, _ := io.ReadAll(r.Body)
		checkFinal(t, ndjsonLines(t, rest), progress.Success)
	}
	// Once acme's builds are done (their handlers return just after the
	// last line), bob's turn.
	deadline := time.Now().Add(testenv.HangGuard)
	for {
		res, data := f.postAs(body, "bob-key", "")
		if res.StatusCode == http.StatusOK {
			break
		}
		if res.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("bob after acme: %d %s", res.StatusCode, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// And with the sandbox on, side by side.
	slots.OneTenantAtATime(false)
	for _, tenant := range []string{"acme", "bob"} {
		if _, err := slots.TryAcquire(tenant); err != nil {
			t.Fatalf("tenants excluded each other with the sandbox on: %v", err)
		}
	}
}
