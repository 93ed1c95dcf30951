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
	return deploymentHandler(updater.Update)
}
