package provider

import (
	"context"
	"net/http"

	"github.com/openfaas/faas-provider/types"
)

// FunctionDeployer creates a function that does not exist yet.
type FunctionDeployer interface {
	Deploy(ctx context.Context, d types.FunctionDeployment) error
}

// MakeDeployHandler answers POST /system/functions. The image is pulled and
// the task started before it answers 202; the function is available once
// its readiness probe passes (availableReplicas in the status).
func MakeDeployHandler(deployer FunctionDeployer) http.HandlerFunc {
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
		if err := deployer.Deploy(r.Context(), d); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}
