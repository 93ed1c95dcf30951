package provider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/provider/state"
	"github.com/fnbuilder/fnbuilder/internal/provider/supervisor"
)

// fakeFunctions records what reached it; err is returned from every call.
type fakeFunctions struct {
	calls []string
	err   error
	ips   map[string]netip.Addr
}

func (f *fakeFunctions) Deploy(_ context.Context, d types.FunctionDeployment) error {
	f.calls = append(f.calls, "deploy "+d.Service+" "+d.Namespace)
	return f.err
}
func (f *fakeFunctions) Update(_ context.Context, d types.FunctionDeployment) error {
	f.calls = append(f.calls, "update "+d.Service)
	return f.err
}
func (f *fakeFunctions) Delete(_ context.Context, name string) error {
	f.calls = append(f.calls, "delete "+name)
	return f.err
}
func (f *fakeFunctions) List(context.Context) ([]types.FunctionStatus, error) {
	f.calls = append(f.calls, "list")
	return []types.FunctionStatus{{Name: "a", Replicas: 1}}, f.err
}
func (f *fakeFunctions) Get(_ context.Context, name string) (types.FunctionStatus, error) {
	f.calls = append(f.calls, "get "+name)
	return types.FunctionStatus{Name: name}, f.err
}
func (f *fakeFunctions) Scale(_ context.Context, name string, n uint64) error {
	f.calls = append(f.calls, fmt.Sprintf("scale %s %d", name, n))
	return f.err
}
func (f *fakeFunctions) Resolve(name string) (netip.Addr, error) {
	if ip, ok := f.ips[name]; ok {
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("function %s: %w", name, supervisor.ErrNotFound)
}
func (f *fakeFunctions) SecretUsers(name string) ([]string, error) {
	if name == "used" {
		return []string{"fn1"}, nil
	}
	return nil, nil
}
func (f *fakeFunctions) Version(context.Context) (string, error) { return "1.6.20", f.err }

func newTestRouter(t *testing.T, fns *fakeFunctions) http.Handler {
	t.Helper()
	store, err := state.Open(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	store.CreateSecret("used", []byte("x"))
	store.CreateSecret("existing", []byte("x"))
	return NewRouter(types.FaaSHandlers{
		FunctionProxy:   MakeProxyHandler(fns, 0),
		FunctionLister:  MakeFunctionListHandler(fns),
		DeployFunction:  MakeDeployHandler(fns),
		UpdateFunction:  MakeUpdateHandler(fns),
		DeleteFunction:  MakeDeleteHandler(fns),
		FunctionStatus:  MakeFunctionGetHandler(fns),
		ScaleFunction:   MakeReplicasHandler(fns),
		Secrets:         MakeSecretsHandler(store, fns),
		Logs:            MakeLogsHandler("/var/lib/x/logs"),
		ListNamespaces:  MakeNamespacesHandler(),
		MutateNamespace: MakeNamespaceHandler(),
		Health:          MakeHealthHandler(fns),
		Info:            MakeInfoHandler("v1", "abc"),
	}, nil)
}

func TestHandlerStatusCodes(t *testing.T) {
	big := `{"service":"a","image":"x","envVars":{"K":"` + strings.Repeat("v", maxBody) + `"}}`
	for _, tc := range []struct {
		name, method, path, body string
		fnErr                    error
		want                     int
		wantCall                 string
	}{
		{"deploy ok", "POST", "/system/functions", `{"service":"hello","image":"127.0.0.1:5000/fn/hello:1"}`, nil, 202, "deploy hello openfaas-fn"},
		{"deploy ns given", "POST", "/system/functions", `{"service":"hello","image":"x","namespace":"openfaas-fn"}`, nil, 202, "deploy hello openfaas-fn"},
		{"deploy empty body", "POST", "/system/functions", ``, nil, 400, ""},
		{"deploy bad json", "POST", "/system/functions", `{"service":`, nil, 400, ""},
		{"deploy too big", "POST", "/system/functions", big, nil, 400, ""},
		{"deploy no name", "POST", "/system/functions", `{"image":"x"}`, nil, 400, ""},
		{"deploy upper name", "POST", "/system/functions", `{"service":"Hello","image":"x"}`, nil, 400, ""},
		{"deploy path name", "POST", "/system/functions", `{"service":"../x","image":"x"}`, nil, 400, ""},
		{"deploy long name", "POST", "/system/functions", `{"service":"` + strings.Repeat("a", 64) + `","image":"x"}`, nil, 400, ""},
		{"deploy no image", "POST", "/system/functions", `{"service":"hello"}`, nil, 400, ""},
		{"deploy bad image", "POST", "/system/functions", `{"service":"hello","image":"UPPER/Case::"}`, nil, 400, ""},
		{"deploy other ns", "POST", "/system/functions", `{"service":"hello","image":"x","namespace":"dev"}`, nil, 400, ""},
		{"deploy bad env", "POST", "/system/functions", `{"service":"hello","image":"x","envVars":{"A=B":"c"}}`, nil, 400, ""},
		{"deploy bad secret", "POST", "/system/functions", `{"service":"hello","image":"x","secrets":["../etc"]}`, nil, 400, ""},
		{"deploy dup secret", "POST", "/system/functions", `{"service":"hello","image":"x","secrets":["a","a"]}`, nil, 400, ""},
		{"deploy bad memory", "POST", "/system/functions", `{"service":"hello","image":"x","limits":{"memory":"lots"}}`, nil, 400, ""},
		{"deploy bad cpu", "POST", "/system/functions", `{"service":"hello","image":"x","limits":{"cpu":"fast"}}`, nil, 400, ""},
		{"deploy gpu", "POST", "/system/functions", `{"service":"hello","image":"x","limits":{"nvidia.com/gpu":"1"}}`, nil, 400, ""},
		{"deploy exists", "POST", "/system/functions", `{"service":"hello","image":"x"}`, supervisor.ErrExists, 409, "deploy hello openfaas-fn"},
		{"deploy invalid", "POST", "/system/functions", `{"service":"hello","image":"x"}`, supervisor.ErrInvalid, 400, "deploy hello openfaas-fn"},
		{"deploy fails", "POST", "/system/functions", `{"service":"hello","image":"x"}`, errors.New("containerd down"), 500, "deploy hello openfaas-fn"},
		{"update ok", "PUT", "/system/functions", `{"service":"hello","image":"x"}`, nil, 202, "update hello"},
		{"update missing", "PUT", "/system/functions", `{"service":"hello","image":"x"}`, supervisor.ErrNotFound, 404, "update hello"},
		{"update bad", "PUT", "/system/functions", `{"service":"hello"}`, nil, 400, ""},
		{"delete ok", "DELETE", "/system/functions", `{"functionName":"hello"}`, nil, 200, "delete hello"},
		{"delete missing", "DELETE", "/system/functions", `{"functionName":"hello"}`, supervisor.ErrNotFound, 404, "delete hello"},
		{"delete no name", "DELETE", "/system/functions", `{}`, nil, 400, ""},
		{"delete other ns", "DELETE", "/system/functions", `{"functionName":"hello","namespace":"x"}`, nil, 400, ""},
		{"list", "GET", "/system/functions", ``, nil, 200, "list"},
		{"list ns", "GET", "/system/functions?namespace=openfaas-fn", ``, nil, 200, "list"},
		{"list other ns", "GET", "/system/functions?namespace=kube-system", ``, nil, 400, ""},
		{"get", "GET", "/system/function/hello", ``, nil, 200, "get hello"},
		{"get dotted", "GET", "/system/function/hello.openfaas-fn", ``, nil, 200, "get hello"},
		{"get other ns", "GET", "/system/function/hello.dev", ``, nil, 400, ""},
		{"get missing", "GET", "/system/function/hello", ``, supervisor.ErrNotFound, 404, "get hello"},
		{"scale 0", "POST", "/system/scale-function/hello", `{"serviceName":"hello","replicas":0}`, nil, 202, "scale hello 0"},
		{"scale 3", "POST", "/system/scale-function/hello", `{"replicas":3}`, nil, 202, "scale hello 3"},
		{"scale mismatch", "POST", "/system/scale-function/hello", `{"serviceName":"other","replicas":1}`, nil, 400, ""},
		{"scale negative", "POST", "/system/scale-function/hello", `{"replicas":-1}`, nil, 400, ""},
		{"scale missing", "POST", "/system/scale-function/hello", `{"replicas":1}`, supervisor.ErrNotFound, 404, "scale hello 1"},
		{"secret create", "POST", "/system/secrets", `{"name":"new","value":"v"}`, nil, 201, ""},
		{"secret create raw", "POST", "/system/secrets", `{"name":"new2","rawValue":"aGk="}`, nil, 201, ""},
		{"secret create exists", "POST", "/system/secrets", `{"name":"existing","value":"v"}`, nil, 409, ""},
		{"secret create empty", "POST", "/system/secrets", `{"name":"new"}`, nil, 400, ""},
		{"secret create bad name", "POST", "/system/secrets", `{"name":"../x","value":"v"}`, nil, 400, ""},
		{"secret update", "PUT", "/system/secrets", `{"name":"existing","value":"v2"}`, nil, 200, ""},
		{"secret update missing", "PUT", "/system/secrets", `{"name":"nope","value":"v"}`, nil, 404, ""},
		{"secret delete in use", "DELETE", "/system/secrets", `{"name":"used"}`, nil, 409, ""},
		{"secret delete", "DELETE", "/system/secrets", `{"name":"existing"}`, nil, 200, ""},
		{"secret delete missing", "DELETE", "/system/secrets", `{"name":"nope"}`, nil, 404, ""},
		{"secret other ns", "GET", "/system/secrets?namespace=x", ``, nil, 400, ""},
		{"logs", "GET", "/system/logs?name=hello", ``, nil, 501, ""},
		{"namespaces", "GET", "/system/namespaces", ``, nil, 200, ""},
		{"namespace mutate", "POST", "/system/namespace/dev", ``, nil, 501, ""},
		{"info", "GET", "/system/info", ``, nil, 200, ""},
		{"healthz", "GET", "/healthz", ``, nil, 200, ""},
		{"healthz down", "GET", "/healthz", ``, errors.New("down"), 503, ""},
		{"proxy no replica", "GET", "/function/hello", ``, nil, 503, ""},
		{"proxy bad name", "GET", "/function/hello.dev/x", ``, nil, 503, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fns := &fakeFunctions{err: tc.fnErr}
			h := newTestRouter(t, fns)
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("%s %s: status %d, want %d (body %q)", tc.method, tc.path, rec.Code, tc.want, rec.Body.String())
			}
			var call string
			if len(fns.calls) > 0 {
				call = fns.calls[0]
			}
			// A request that fails validation must not reach the functions.
			if call != tc.wantCall {
				t.Fatalf("call %q, want %q", call, tc.wantCall)
			}
		})
	}
}

func TestSecretsListHasNoValues(t *testing.T) {
	h := newTestRouter(t, &fakeFunctions{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/system/secrets", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	want := `[{"name":"existing","namespace":"openfaas-fn"},{"name":"used","namespace":"openfaas-fn"}]`
	if got := rec.Body.String(); got != want {
		t.Fatalf("body %s, want %s", got, want)
	}
}

func TestResolver(t *testing.T) {
	r := Resolver{Functions: &fakeFunctions{ips: map[string]netip.Addr{"hello": netip.MustParseAddr("10.62.0.5")}}}
	for in, want := range map[string]string{
		"hello":             "http://10.62.0.5:8080",
		"hello.openfaas-fn": "http://10.62.0.5:8080",
	} {
		u, err := r.Resolve(in)
		if err != nil || u.String() != want {
			t.Errorf("Resolve(%q) = %s, %v; want %s", in, u.String(), err, want)
		}
	}
	for _, in := range []string{"missing", "hello.other", "", "Hello", "hello.openfaas-fn.x"} {
		if u, err := r.Resolve(in); err == nil {
			t.Errorf("Resolve(%q) = %s, want an error", in, u.String())
		}
	}
}

func TestStatusOf(t *testing.T) {
	for err, want := range map[error]int{
		badRequest("x"): 400,
		fmt.Errorf("w: %w", supervisor.ErrInvalid):  400,
		fmt.Errorf("w: %w", state.ErrNotFound):      404,
		fmt.Errorf("w: %w", supervisor.ErrNotFound): 404,
		fmt.Errorf("w: %w", state.ErrExists):        409,
		fmt.Errorf("w: %w", supervisor.ErrInUse):    409,
		errors.New("boom"):                          500,
	} {
		if got := statusOf(err); got != want {
			t.Errorf("statusOf(%v) = %d, want %d", err, got, want)
		}
	}
}
