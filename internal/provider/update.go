package provider

import (
	"context"
	"net/http"

	"github.com/openfaas/faas-provider/types"
)

// FunctionUpdater replaces an existing function's deployment.
type FunctionUpdater interface {
	Update(ctx context.Context, d types.FunctionDeployment) error
}

// MakeUpdateHandler answers PUT /system/functions: 404 for a function that
// does not exist, 202 once the new container's task was started (or, for a
// function scaled to zero, once the new deployment is recorded).
func MakeUpdateHandler(updater FunctionUpdater) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var d types.FunctionDeployment
		if err := decodeJSON(w, r, &d); err != nil {
			writeError(w, r, err)
			return
		}
		d, err := validateDeployment(d)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := updater.Update(r.Context(), d); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}
