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
	return deploymentHandler(deployer.Deploy)
}

// FunctionUpdater replaces an existing function's deployment.
type FunctionUpdater interface {
	Update(ctx context.Context, d types.FunctionDeployment) error
}

// MakeUpdateHandler answers PUT /system/functions: 404 for a function that
// does not exist, 202 once the new container's task was started (or, for a
// function scaled to zero, once the new deployment is recorded).
func MakeUpdateHandler(updater FunctionUpdater) http.HandlerFunc {
	return deploymentHandler(updater.Update)
}

// deploymentHandler decodes and validates a deployment and hands it to
// apply: deploy and update differ only there.
func deploymentHandler(apply func(context.Context, types.FunctionDeployment) error) http.HandlerFunc {
	return jsonHandler(http.StatusAccepted, func(r *http.Request, d types.FunctionDeployment) error {
		d, err := validateDeployment(d)
		if err != nil {
			return err
		}
		return apply(r.Context(), d)
	})
}
