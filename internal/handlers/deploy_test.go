package handlers_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/deploy/deploytest"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

type deployFixture struct {
	t    *testing.T
	srv  *httptest.Server
	gw   *deploytest.Gateway
	opts handlers.DeployOptions
}

func newDeployFixture(t *testing.T, gw *deploytest.Gateway, configure ...func(*handlers.DeployOptions)) *deployFixture {
	t.Helper()
	o := handlers.DeployOptions{
		Gateway:      func() (deploy.Gateway, error) { return gw, nil },
		Tenants:      oneTenant(func() ([]byte, error) { return []byte(" " + payloadText + "\n"), nil }),
		MaxBodyBytes: 64 << 10,
		SpoolDir:     t.TempDir(),
	}
	for _, c := range configure {
		c(&o)
	}
	srv := httptest.NewServer(handlers.MakeDeployHandler(o))
	t.Cleanup(srv.Close)
	return &deployFixture{t: t, srv: srv, gw: gw, opts: o}
}

// post sends body with X-Deploy-Signature sig ("" for none).
func (f *deployFixture) post(body []byte, sig string) (*http.Response, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set("X-Deploy-Signature", sig)
	}
	res, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return res, data
}

func (f *deployFixture) postSigned(body string) (*http.Response, []byte) {
	f.t.Helper()
	return f.post([]byte(body), testenv.Sign([]byte(payloadText), []byte(body)))
}

const helloSpec = `{"name":"hello","image":"` + testImage + `","namespace":"openfaas-fn","labels":{"team":"a"},"limits":{"memory":"128Mi"},"secrets":["db"],"env":{"MODE":"prod"}}`

func checkDeployed(t *testing.T, res *http.Response, data []byte, action string) {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var got map[string]string
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("reply is not a JSON object of strings: %v: %s", err, data)
	}
	want := map[string]string{"name": "hello", "namespace": "openfaas-fn", "image": testImage, "action": action}
	if len(got) != len(want) {
		t.Fatalf("reply %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("reply %v, want %v", got, want)
		}
	}
}

func TestDeployHandlerUpdates(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusAccepted}}
	f := newDeployFixture(t, gw)
	res, data := f.postSigned(helloSpec)
	checkDeployed(t, res, data, "updated")
	if u, d := gw.Calls(); u != 1 || d != 0 {
		t.Fatalf("gateway %d updates, %d deploys; want 1, 0", u, d)
	}
	sent := gw.Updates()[0]
	if sent.Service != "hello" || sent.Image != testImage || sent.Namespace != "openfaas-fn" ||
		sent.Labels == nil || (*sent.Labels)["team"] != "a" || sent.Limits == nil || sent.Limits.Memory != "128Mi" ||
		len(sent.Secrets) != 1 || sent.Secrets[0] != "db" || sent.EnvVars["MODE"] != "prod" {
		t.Fatalf("deployment sent %+v", sent)
	}
	waitEmpty(t, f.opts.SpoolDir)
}

func TestDeployHandlerCreatesOn404(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusNotFound}, DeployCodes: []int{http.StatusAccepted}}
	f := newDeployFixture(t, gw)
	res, data := f.postSigned(helloSpec)
	checkDeployed(t, res, data, "created")
	if u, d := gw.Calls(); u != 1 || d != 1 {
		t.Fatalf("gateway %d updates, %d deploys; want 1, 1", u, d)
	}
}

func TestDeployHandlerSignature(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	f := newDeployFixture(t, gw)
	for name, sig := range map[string]string{
		"unsigned":   "",
		"malformed":  "sha256=nothex",
		"wrong key":  testenv.Sign([]byte("another secret"), []byte(helloSpec)),
		"other body": testenv.Sign([]byte(payloadText), []byte(strings.Replace(helloSpec, "hello", "other", 1))),
	} {
		res, data := f.post([]byte(helloSpec), sig)
		checkErrorReply(t, res, data, http.StatusUnauthorized)
		if u, d := gw.Calls(); u+d != 0 {
			t.Fatalf("%s: gateway called", name)
		}
	}
	// X-Build-Signature is not the deploy header.
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL, strings.NewReader(helloSpec))
	req.Header.Set("X-Build-Signature", testenv.Sign([]byte(payloadText), []byte(helloSpec)))
	res, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("signed in X-Build-Signature: %d, want 401", res.StatusCode)
	}
	waitEmpty(t, f.opts.SpoolDir)
}

func TestDeployHandlerBadSpec(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	f := newDeployFixture(t, gw)
	for name, body := range map[string]string{
		"not json":      `{"name":`,
		"unknown field": `{"name":"hello","image":"x","replicas":2}`,
		"invalid name":  `{"name":"Hello_World","image":"x"}`,
		"no name":       `{"image":"x"}`,
		"no image":      `{"name":"hello"}`,
		"bad namespace": `{"name":"hello","image":"x","namespace":"A.B"}`,
	} {
		res, data := f.postSigned(body)
		e := checkErrorReply(t, res, data, http.StatusBadRequest)
		if e.Error == "" {
			t.Fatalf("%s: no error message", name)
		}
	}
	if u, d := gw.Calls(); u+d != 0 {
		t.Fatal("gateway called for a bad spec")
	}
	waitEmpty(t, f.opts.SpoolDir)
}

func TestDeployHandlerGatewayErrors(t *testing.T) {
	for _, tc := range []struct {
		update, deploy, want int
	}{
		{http.StatusInternalServerError, 0, http.StatusInternalServerError},
		{http.StatusServiceUnavailable, 0, http.StatusServiceUnavailable},
		{http.StatusUnauthorized, 0, http.StatusUnauthorized},
		{http.StatusNotFound, http.StatusBadRequest, http.StatusBadRequest},
		{http.StatusNotFound, http.StatusInternalServerError, http.StatusInternalServerError},
	} {
		gw := &deploytest.Gateway{UpdateCodes: []int{tc.update}, DeployCodes: []int{tc.deploy}}
		f := newDeployFixture(t, gw)
		res, data := f.postSigned(helloSpec)
		e := checkErrorReply(t, res, data, tc.want)
		if !strings.Contains(e.Error, "gateway answered") {
			t.Fatalf("update %d: error %q", tc.update, e.Error)
		}
	}
}

func TestDeployHandlerMisconfigured(t *testing.T) {
	t.Run("gateway client", func(t *testing.T) {
		f := newDeployFixture(t, nil, func(o *handlers.DeployOptions) {
			o.Gateway = func() (deploy.Gateway, error) { return nil, errors.New("bad gateway_url") }
		})
		res, data := f.postSigned(helloSpec)
		if e := checkErrorReply(t, res, data, http.StatusInternalServerError); !strings.Contains(e.Error, "bad gateway_url") {
			t.Fatalf("error %q", e.Error)
		}
	})
	t.Run("payload secret", func(t *testing.T) {
		gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
		f := newDeployFixture(t, gw, func(o *handlers.DeployOptions) {
			o.Tenants = oneTenant(func() ([]byte, error) { return nil, errors.New("not mounted") })
		})
		res, data := f.postSigned(helloSpec)
		checkErrorReply(t, res, data, http.StatusInternalServerError)
		if u, d := gw.Calls(); u+d != 0 {
			t.Fatal("gateway called without a payload secret")
		}
	})
	t.Run("empty payload secret", func(t *testing.T) {
		gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
		f := newDeployFixture(t, gw, func(o *handlers.DeployOptions) {
			o.Tenants = oneTenant(func() ([]byte, error) { return []byte(" \n"), nil })
		})
		res, data := f.post([]byte(helloSpec), testenv.Sign([]byte(""), []byte(helloSpec)))
		checkErrorReply(t, res, data, http.StatusInternalServerError)
		if u, d := gw.Calls(); u+d != 0 {
			t.Fatal("gateway called with an empty payload secret")
		}
	})
}

func TestDeployHandlerLimitsAndMethod(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	f := newDeployFixture(t, gw, func(o *handlers.DeployOptions) { o.MaxBodyBytes = 100 })
	big := `{"name":"hello","image":"x","env":{"A":"` + strings.Repeat("a", 200) + `"}}`
	res, data := f.postSigned(big)
	checkErrorReply(t, res, data, http.StatusRequestEntityTooLarge)

	get, err := f.srv.Client().Get(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	get.Body.Close()
	if get.StatusCode != http.StatusMethodNotAllowed || get.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d Allow=%q", get.StatusCode, get.Header.Get("Allow"))
	}
	if u, d := gw.Calls(); u+d != 0 {
		t.Fatal("gateway called")
	}
	waitEmpty(t, f.opts.SpoolDir)
}

func TestDeployHandlerDisableHMAC(t *testing.T) {
	gw := &deploytest.Gateway{UpdateCodes: []int{http.StatusOK}}
	f := newDeployFixture(t, gw, func(o *handlers.DeployOptions) {
		o.DisableHMAC = true
		o.Tenants = oneTenant(func() ([]byte, error) { return nil, errors.New("not mounted") })
	})
	for name, sig := range map[string]string{
		"unsigned":      "",
		"signed anyway": testenv.Sign([]byte("whatever"), []byte(helloSpec)),
		"garbage":       "nonsense",
	} {
		res, data := f.post([]byte(helloSpec), sig)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d with HMAC disabled: %s", name, res.StatusCode, data)
		}
		checkDeployed(t, res, data, "updated")
	}
	if u, _ := gw.Calls(); u != 3 {
		t.Fatalf("%d updates, want 3", u)
	}
	waitEmpty(t, f.opts.SpoolDir)
}

// deploy-fn follows the tenants too: the key that signs a spec names the
// tenant, and the spec must stay within what that tenant may deploy.
func TestDeployHandlerTenants(t *testing.T) {
	acme := tenant.Tenant{Name: "acme", PayloadSecret: "payload-secret-acme",
		Images: []string{"registry.example.com/acme/"}, Namespaces: []string{"openfaas-fn"}, Secrets: []string{"acme-*"}}
	bob := tenant.Tenant{Name: "bob", PayloadSecret: "payload-secret-bob", Images: []string{"registry.example.com/bob/"}, Namespaces: []string{"openfaas-fn"}}
	keys := map[string]string{"payload-secret-acme": "acme-key", "payload-secret-bob": "bob-key"}
	gw := &deploytest.Gateway{Functions: []types.FunctionStatus{deploytest.Owned("bobs", deploy.OwnerLabel, "bob")}}
	f := newDeployFixture(t, gw, func(o *handlers.DeployOptions) {
		o.Tenants = tenant.NewDirectory([]tenant.Tenant{acme, bob}, func(s string) ([]byte, error) { return []byte(keys[s]), nil })
		o.Policy = deploy.Policy{ReservedSecrets: []string{"payload-secret-acme", "payload-secret-bob"}, ReservedFunctions: []string{"deploy-fn"}, DefaultNamespace: "openfaas-fn"}
	})
	for name, spec := range map[string]string{
		"bob's image":         `{"name":"x","image":"registry.example.com/bob/fn:1"}`,
		"another namespace":   `{"name":"x","image":"registry.example.com/acme/fn:1","namespace":"openfaas"}`,
		"bob's secret":        `{"name":"x","image":"registry.example.com/acme/fn:1","secrets":["bob-db"]}`,
		"a payload secret":    `{"name":"x","image":"registry.example.com/acme/fn:1","secrets":["payload-secret-acme"]}`,
		"over deploy-fn":      `{"name":"deploy-fn","image":"registry.example.com/acme/fn:1"}`,
		"over bob's function": `{"name":"bobs","image":"registry.example.com/acme/fn:1"}`,
	} {
		res, data := f.post([]byte(spec), testenv.Sign([]byte("acme-key"), []byte(spec)))
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(data), "deploy refused") {
			t.Errorf("%s: %d %s, want 400 deploy refused", name, res.StatusCode, data)
		}
	}
	if u, d := gw.Calls(); u+d != 0 {
		t.Fatalf("the gateway received %d updates and %d deploys", u, d)
	}
	// The twins: each tenant deploys its own.
	for key, spec := range map[string]string{
		"acme-key": `{"name":"a","image":"registry.example.com/acme/fn:1","secrets":["acme-db"]}`,
		"bob-key":  `{"name":"bobs","image":"registry.example.com/bob/fn:1"}`,
	} {
		if res, data := f.post([]byte(spec), testenv.Sign([]byte(key), []byte(spec))); res.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s", key, res.StatusCode, data)
		}
	}
	owners := map[string]string{}
	for _, u := range gw.Updates() {
		owners[u.Service] = (*u.Labels)[deploy.OwnerLabel]
	}
	if owners["a"] != "acme" || owners["bobs"] != "bob" {
		t.Fatalf("deployed with owners %v", owners)
	}
}
