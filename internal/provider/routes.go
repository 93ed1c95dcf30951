package provider

import (
	"net/http"

	"github.com/gorilla/mux"
	bootstrap "github.com/openfaas/faas-provider"
	"github.com/openfaas/faas-provider/auth"
	"github.com/openfaas/faas-provider/types"
)

// NewRouter lays the handlers out on the routes of faas-provider's
// bootstrap.Serve. It does not use Serve itself: Serve registers on a
// package-global router (a second provider in one process, as in the
// restart test, would find the first one's routes), always listens on all
// interfaces, and exits the process when the port is taken.
//
// With creds set, every /system route and /healthz need basic auth, as
// bootstrap.Serve does; /function/* stays open (the gateway checks auth
// for invocations itself).
func NewRouter(h types.FaaSHandlers, creds *auth.BasicAuthCredentials) *mux.Router {
	protect := func(f http.HandlerFunc) http.HandlerFunc {
		if creds == nil {
			return f
		}
		return auth.DecorateWithBasicAuth(f, creds)
	}
	const name = "{name:[" + bootstrap.NameExpression + "]+}"
	r := mux.NewRouter()
	r.HandleFunc("/system/functions", protect(h.FunctionLister)).Methods(http.MethodGet)
	r.HandleFunc("/system/functions", protect(h.DeployFunction)).Methods(http.MethodPost)
	r.HandleFunc("/system/functions", protect(h.DeleteFunction)).Methods(http.MethodDelete)
	r.HandleFunc("/system/functions", protect(h.UpdateFunction)).Methods(http.MethodPut)
	r.HandleFunc("/system/function/"+name, protect(h.FunctionStatus)).Methods(http.MethodGet)
	r.HandleFunc("/system/scale-function/"+name, protect(h.ScaleFunction)).Methods(http.MethodPost)
	r.HandleFunc("/system/info", protect(h.Info)).Methods(http.MethodGet)
	r.HandleFunc("/system/secrets", protect(h.Secrets)).Methods(http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete)
	r.HandleFunc("/system/logs", protect(h.Logs)).Methods(http.MethodGet)
	r.HandleFunc("/system/namespaces", protect(h.ListNamespaces)).Methods(http.MethodGet)
	r.HandleFunc("/system/namespace/{name:["+bootstrap.NameExpression+"]*}", protect(h.MutateNamespace)).
		Methods(http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete)
	r.HandleFunc("/function/"+name, h.FunctionProxy)
	r.HandleFunc("/function/"+name+"/", h.FunctionProxy)
	r.HandleFunc("/function/"+name+"/{params:.*}", h.FunctionProxy)
	r.HandleFunc("/healthz", protect(h.Health)).Methods(http.MethodGet)
	return r
}
