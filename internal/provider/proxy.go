package provider

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/openfaas/faas-provider/proxy"
	"github.com/openfaas/faas-provider/types"
)

// FunctionResolver gives the address of a function's running task.
type FunctionResolver interface {
	Resolve(name string) (netip.Addr, error)
}

// Resolver maps a function name ("name" or "name.openfaas-fn") to
// http://IP:8080, for faas-provider's proxy.
type Resolver struct {
	Functions FunctionResolver
}

// Resolve implements proxy.BaseURLResolver.
func (r Resolver) Resolve(name string) (url.URL, error) {
	fn, err := functionFromPath(name)
	if err != nil {
		return url.URL{}, err
	}
	ip, err := r.Functions.Resolve(fn)
	if err != nil {
		return url.URL{}, err
	}
	if !ip.IsValid() {
		return url.URL{}, fmt.Errorf("function %s has no address", fn)
	}
	return url.URL{Scheme: "http", Host: netip.AddrPortFrom(ip, 8080).String()}, nil
}

// MakeProxyHandler serves /function/{name}[/path] with faas-provider's
// proxy: 503 when the function has no running task, the function's own
// answer otherwise; timeout bounds one invocation.
func MakeProxyHandler(functions FunctionResolver, timeout time.Duration) http.HandlerFunc {
	return proxy.NewHandlerFunc(types.FaaSConfig{ReadTimeout: timeout}, Resolver{Functions: functions}, false)
}
