package hardening

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// recordingProxy stands in front of the test registry and remembers the
// path of every request, so a test can say the registry was never asked
// for another tenant's image.
type recordingProxy struct {
	addr  string
	mu    sync.Mutex
	paths []string
}

func startRecordingProxy(t *testing.T, upstream string) *recordingProxy {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.paths = append(p.paths, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		rp.ServeHTTP(w, r) // the Host header stays the proxy's: upload locations point back here
	}))
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

func (p *recordingProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paths = nil
}

// asked lists the requests whose path holds fragment.
func (p *recordingProxy) asked(fragment string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, path := range p.paths {
		if strings.Contains(path, fragment) {
			out = append(out, path)
		}
	}
	return out
}

// recordingGateway is enough of the OpenFaaS gateway for go-sdk's deploy:
// it lists functions, and records every request.
type recordingGateway struct {
	url       string
	mu        sync.Mutex
	functions []types.FunctionStatus
	writes    []types.FunctionDeployment
}

func startRecordingGateway(t *testing.T, existing ...types.FunctionStatus) *recordingGateway {
	t.Helper()
	g := &recordingGateway{functions: existing}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/system/functions":
			_ = json.NewEncoder(w).Encode(g.functions)
		case (r.Method == http.MethodPut || r.Method == http.MethodPost) && r.URL.Path == "/system/functions":
			var d types.FunctionDeployment
			if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			g.writes = append(g.writes, d)
			if r.Method == http.MethodPut {
				w.WriteHeader(http.StatusNotFound) // not there yet: go-sdk's create follows
				return
			}
			w.WriteHeader(http.StatusAccepted)
		default:
			http.Error(w, "not here", http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	g.url = srv.URL
	return g
}

func (g *recordingGateway) deployed() []types.FunctionDeployment {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]types.FunctionDeployment(nil), g.writes...)
}

func (g *recordingGateway) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes = nil
}

// tenantsBuilder is build-fn with two tenants, acme and bob, on a real
// rootless buildkitd and a registry whose every request is recorded.
type tenantsBuilder struct {
	*builder
	proxy   *recordingProxy
	reg     *testenv.Registry
	gateway *recordingGateway
	library string // the shared base image, on the guarded registry
	private string // an image only acme may pull
	keys    map[string][]byte
}

func startTenants(t *testing.T) *tenantsBuilder {
	t.Helper()
	reg := testenv.StartRegistry(t)
	proxy := startRecordingProxy(t, reg.URL())
	// buildkitd reaches the proxy over plain HTTP like the registry.
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr, proxy.addr}})
	base := testenv.PushBusybox(t, bk, reg)
	tb := &tenantsBuilder{proxy: proxy, reg: reg, library: proxy.addr + "/library/base:1", private: proxy.addr + "/acme/private:1"}
	for ref, dockerfile := range map[string]string{
		tb.library: "FROM " + base + "\n",
		tb.private: "FROM " + base + "\nRUN echo acme-private-layer > /private\n",
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.BuildPush(t, bk, nil, dir, ref, nil)
	}
	tenants := fmt.Sprintf(`tenants:
  acme:
    payload_secret: payload-secret-acme
    images: ["%[1]s/acme/"]
    base_images: ["%[1]s/library/"]
    namespaces: ["openfaas-fn"]
    secrets: ["acme-*"]
  bob:
    payload_secret: payload-secret-bob
    images: ["%[1]s/bob/"]
    base_images: ["%[1]s/library/"]
    namespaces: ["bob-fn"]
    secrets: ["bob-*"]
`, proxy.addr)
	tenantsFile := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(tenantsFile, []byte(tenants), 0o600); err != nil {
		t.Fatal(err)
	}
	// bob already runs a function called "shared-name"; so does the operator ("dashboard").
	tb.gateway = startRecordingGateway(t,
		types.FunctionStatus{Name: "shared-name", Labels: &map[string]string{deploy.OwnerLabel: "bob"}},
		types.FunctionStatus{Name: "dashboard"},
	)
	tb.builder = startBuilder(t, newKeys(t), map[string]string{
		"buildkit_url":        bk.Addr,
		"insecure_registries": reg.Addr + "," + proxy.addr,
		"tenants_file":        tenantsFile,
		"gateway_url":         tb.gateway.url,
	})
	tb.keys = map[string][]byte{"acme": []byte("acme-" + testenv.RandomHex(t, 16)), "bob": []byte("bob-" + testenv.RandomHex(t, 16))}
	for name, key := range tb.keys {
		if err := os.WriteFile(filepath.Join(tb.parent, "secrets", "payload-secret-"+name), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

// send posts a build of tenant's, streaming, and returns the response.
func (tb *tenantsBuilder) send(t *testing.T, tenant string, cfg map[string]any, dockerfile string) *http.Response {
	t.Helper()
	body := testenv.BuildTar(t, testenv.Dir("context/"), testenv.File("context/Dockerfile", dockerfile), testenv.ConfigEntry(t, cfg))
	return testenv.Post(t, tb.url+"/build", body, testenv.SignedHeader(tb.keys[tenant], body, true))
}

// build sends a build and returns its final line and log.
func (tb *tenantsBuilder) build(t *testing.T, tenant, image, dockerfile string) (progress.Result, string) {
	t.Helper()
	return final(t, tb.send(t, tenant, map[string]any{"image": image}, dockerfile))
}

// refused sends a request that must be refused before any build, with
// 400 and an error naming want.
func (tb *tenantsBuilder) refused(t *testing.T, tenant string, cfg map[string]any, dockerfile, want string) {
	t.Helper()
	before := tb.Runs.Load()
	res := tb.send(t, tenant, cfg, dockerfile)
	if testenv.Status(res) != http.StatusBadRequest {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d, want 400: %s", testenv.Status(res), body)
	}
	if msg := errorBody(t, res); !strings.Contains(msg, want) {
		t.Fatalf("refusal %q does not name %q", msg, want)
	}
	if tb.Runs.Load() != before {
		t.Fatal("a refused request reached BuildKit")
	}
}

// TestTenants: two tenants share one build-fn, one rootless buildkitd and
// one registry. Each attack a tenant can make on the other through the
// builder is made, and refused with nothing reaching the registry or the
// gateway; each has a twin showing the same thing works for the tenant it
// belongs to, so the refusal proves something.
func TestTenants(t *testing.T) {
	tb := startTenants(t)
	acmeImage := tb.proxy.addr + "/acme/fn:1"
	bobImage := tb.proxy.addr + "/bob/fn:1"

	t.Run("reserved build args are refused", func(t *testing.T) {
		for _, arg := range []string{"BUILDKIT_SYNTAX", "BUILDKIT_CACHE_MOUNT_NS", "buildkit_sandbox_hostname", "BuildKit_Multi_Platform"} {
			tb.proxy.reset()
			tb.refused(t, "bob", map[string]any{"image": bobImage, "buildArgs": map[string]string{arg: tb.proxy.addr + "/acme/frontend:1"}},
				"FROM "+tb.library+"\n", arg)
			if asked := tb.proxy.asked("/acme/"); len(asked) != 0 {
				t.Fatalf("%s: the registry was asked %v", arg, asked)
			}
		}
		fin, logs := tb.build(t, "bob", bobImage, "FROM "+tb.library+"\nARG GREETING\nRUN echo $GREETING > /greeting\n")
		if fin.Status != progress.Success {
			t.Fatalf("an ordinary build: %+v\n%s", fin, logs)
		}
	})

	t.Run("foreign pulls never reach the registry", func(t *testing.T) {
		for name, dockerfile := range map[string]string{
			"FROM":        "FROM " + tb.private + "\n",
			"COPY --from": "FROM " + tb.library + "\nCOPY --from=" + tb.private + " /private /stolen\n",
			"RUN --mount": "FROM " + tb.library + "\nRUN --mount=type=bind,from=" + tb.private + ",target=/m cat /m/private > /stolen\n",
		} {
			tb.proxy.reset()
			fin, logs := tb.build(t, "bob", bobImage, dockerfile)
			if fin.Status != progress.Failed || !strings.Contains(fin.Error+logs, "denied by policy") {
				t.Fatalf("%s: bob pulled acme's image: %+v\n%s", name, fin, logs)
			}
			if asked := tb.proxy.asked("/acme/"); len(asked) != 0 {
				t.Fatalf("%s: the registry was asked %v", name, asked)
			}
		}
		// A "# syntax=" line naming acme's image is not followed: the
		// built-in frontend builds, and says so.
		tb.proxy.reset()
		fin, logs := tb.build(t, "bob", bobImage, "# syntax="+tb.private+"\nFROM "+tb.library+"\n")
		if fin.Status != progress.Success || !strings.Contains(logs, "ignoring the Dockerfile's syntax line") {
			t.Fatalf("syntax line: %+v\n%s", fin, logs)
		}
		if asked := tb.proxy.asked("/acme/"); len(asked) != 0 {
			t.Fatalf("syntax line: the registry was asked %v", asked)
		}
		// The twin: acme pulls its own image.
		tb.proxy.reset()
		fin, logs = tb.build(t, "acme", acmeImage, "FROM "+tb.private+"\n")
		if fin.Status != progress.Success || len(tb.proxy.asked("/v2/acme/private/manifests/")) == 0 {
			t.Fatalf("acme's own pull: %+v, registry asked %v\n%s", fin, tb.proxy.asked("/acme/"), logs)
		}
	})

	t.Run("foreign pushes are refused before anything is built", func(t *testing.T) {
		tb.proxy.reset()
		tb.refused(t, "bob", map[string]any{"image": tb.proxy.addr + "/acme/fn:1"}, "FROM "+tb.library+"\n", "not one tenant bob may push")
		tb.refused(t, "bob", map[string]any{"image": tb.proxy.addr + "/acme-fn:1"}, "FROM "+tb.library+"\n", "not one tenant bob may push")
		if asked := tb.proxy.asked("/acme"); len(asked) != 0 {
			t.Fatalf("the registry was asked %v", asked)
		}
	})

	t.Run("cache mounts and build steps are per tenant", func(t *testing.T) {
		marker := "acme-cache-" + testenv.RandomHex(t, 8)
		write := fmt.Sprintf("FROM %s\nRUN --mount=type=cache,id=deps,target=/cache echo %s > /cache/marker\n", tb.library, marker)
		// The same text for both tenants: BuildKit leaves the cache id out of
		// a step's cache key, so this also catches a layer shared across tenants.
		read := "FROM " + tb.library + "\nRUN --mount=type=cache,id=deps,target=/cache sh -c 'cat /cache/marker > /seen 2>/dev/null || echo nothing > /seen'\n"
		if fin, logs := tb.build(t, "acme", acmeImage, write); fin.Status != progress.Success {
			t.Fatalf("acme writes its cache: %+v\n%s", fin, logs)
		}
		if fin, logs := tb.build(t, "acme", tb.proxy.addr+"/acme/reader:1", read); fin.Status != progress.Success {
			t.Fatalf("acme reads its cache: %+v\n%s", fin, logs)
		}
		if fin, logs := tb.build(t, "bob", tb.proxy.addr+"/bob/reader:1", read); fin.Status != progress.Success {
			t.Fatalf("bob reads: %+v\n%s", fin, logs)
		}
		if got := strings.TrimSpace(string(testenv.ImageFile(t, tb.reg, "acme/reader", "1", "seen"))); got != marker {
			t.Fatalf("acme's own cache holds %q, want its marker %q", got, marker)
		}
		if got := strings.TrimSpace(string(testenv.ImageFile(t, tb.reg, "bob/reader", "1", "seen"))); got != "nothing" {
			t.Fatalf("bob saw %q in its cache mount (acme's marker is %q)", got, marker)
		}
	})

	t.Run("deploys stay within the tenant", func(t *testing.T) {
		for name, spec := range map[string]map[string]any{
			"another namespace":            {"name": "fn-a", "namespace": "bob-fn"},
			"the gateway's namespace":      {"name": "fn-a", "namespace": "openfaas"},
			"the HMAC key":                 {"name": "fn-a", "secrets": []string{"payload-secret-acme"}},
			"the private key":              {"name": "fn-a", "secrets": []string{"build-secrets-key"}},
			"registry credentials":         {"name": "fn-a", "secrets": []string{"registry-config"}},
			"gateway password":             {"name": "fn-a", "secrets": []string{"basic-auth-password"}},
			"bob's secret":                 {"name": "fn-a", "secrets": []string{"bob-db"}},
			"over build-fn":                {"name": "build-fn"},
			"over bob's function":          {"name": "shared-name"},
			"over the operator's function": {"name": "dashboard"},
		} {
			tb.gateway.reset()
			tb.refused(t, "acme", map[string]any{"image": acmeImage, "deploy": spec}, "FROM "+tb.library+"\n", "deploy refused")
			if d := tb.gateway.deployed(); len(d) != 0 {
				t.Fatalf("%s: the gateway received %+v", name, d)
			}
		}
		// The twin: acme deploys its own function with its own secret.
		tb.gateway.reset()
		res := tb.send(t, "acme", map[string]any{"image": acmeImage, "deploy": map[string]any{"name": "fn-a", "secrets": []string{"acme-db"}}}, "FROM "+tb.library+"\n")
		fin, logs := final(t, res)
		if fin.Status != progress.Success || fin.Deploy == nil || fin.Deploy.Action != "created" {
			t.Fatalf("acme's deploy: %+v\n%s", fin, logs)
		}
		d := tb.gateway.deployed()
		if len(d) != 2 || d[1].Service != "fn-a" || !strings.HasPrefix(d[1].Image, acmeImage+"@sha256:") || (*d[1].Labels)[deploy.OwnerLabel] != "acme" {
			t.Fatalf("the gateway received %+v", d)
		}
	})
}
