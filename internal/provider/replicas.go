package provider

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/openfaas/faas-provider/types"
)

// FunctionScaler sets a function's desired replicas.
type FunctionScaler interface {
	Scale(ctx context.Context, name string, replicas uint64) error
}

// MakeReplicasHandler answers POST /system/scale-function/{name} with a
// JSON body {"serviceName": …, "replicas": N}. 0 stops the task, any
// higher count runs exactly one (this provider runs one replica at most).
// It answers 202 once the task is stopped or started.
func MakeReplicasHandler(scaler FunctionScaler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, err := functionFromPath(mux.Vars(r)["name"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		var req types.ScaleServiceRequest
		if err := decodeJSON(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		if err := validateNamespace(req.Namespace); err != nil {
			writeError(w, r, err)
			return
		}
		if req.ServiceName != "" && req.ServiceName != name {
			writeError(w, r, badRequest("serviceName %q does not match the path's %q", req.ServiceName, name))
			return
		}
		if err := scaler.Scale(r.Context(), name, req.Replicas); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}
