// Package function is deploy-fn: POST a signed deploy spec (name, image,
// namespace, env, labels, annotations, secrets, limits) and it creates or
// updates the function through the OpenFaaS gateway with go-sdk, within
// what the signing tenant may deploy.
package function

import (
	"net/http"
	"os"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
)

// Handle is the golang-middleware entry point: New's handler, made from
// the settings at the first request.
var Handle = handlers.Serve("deploy-fn", New)

// New builds deploy-fn's handler from its settings: gateway_url, the
// gateway's basic-auth secrets, and the tenants that sign deploys.
func New(cfg config.Config) (http.Handler, error) {
	disableHMAC, err := cfg.Bool("disable_hmac", false)
	if err != nil {
		return nil, err
	}
	maxBody, err := cfg.Positive("max_request_bytes", 1<<20)
	if err != nil {
		return nil, err
	}
	tenants, err := cfg.Tenants()
	if err != nil {
		return nil, err
	}
	return handlers.MakeDeployHandler(handlers.DeployOptions{
		Gateway:     deploy.Connect(cfg.GatewayURL(), cfg.GatewayCredentials),
		Tenants:     tenants,
		DisableHMAC: disableHMAC,
		Policy: deploy.Policy{
			ReservedSecrets:   cfg.BuilderSecrets(tenants),
			ReservedFunctions: cfg.BuilderFunctions(),
			DefaultNamespace:  cfg.FunctionNamespace(),
		},
		MaxBodyBytes: maxBody,
		SpoolDir:     cfg.String("work_dir", os.TempDir()),
	}), nil
}
