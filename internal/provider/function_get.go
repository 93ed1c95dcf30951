package provider

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/openfaas/faas-provider/types"
)

// FunctionGetter returns one function's status.
type FunctionGetter interface {
	Get(ctx context.Context, name string) (types.FunctionStatus, error)
}

// MakeFunctionGetHandler answers GET /system/function/{name}[?namespace=openfaas-fn].
func MakeFunctionGetHandler(getter FunctionGetter) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := validateNamespace(r.URL.Query().Get("namespace")); err != nil {
			writeError(w, r, err)
			return
		}
		name, err := functionFromPath(mux.Vars(r)["name"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		st, err := getter.Get(r.Context(), name)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}
}
