package provider

import (
	"context"
	"net/http"

	"github.com/openfaas/faas-provider/types"
)

// FunctionLister lists every function with its status.
type FunctionLister interface {
	List(ctx context.Context) ([]types.FunctionStatus, error)
}

// MakeFunctionListHandler answers GET /system/functions[?namespace=openfaas-fn].
func MakeFunctionListHandler(lister FunctionLister) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := validateNamespace(r.URL.Query().Get("namespace")); err != nil {
			writeError(w, r, err)
			return
		}
		fns, err := lister.List(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, fns)
	}
}
