// Package function is deploy-fn: POST a signed deploy spec (name, image,
// namespace, env, labels, annotations, secrets, limits) and it creates or
// updates the function through the OpenFaaS gateway with go-sdk.
package function

import (
	"net/http"
	"os"
	"sync"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
)

var handler = sync.OnceValue(func() http.HandlerFunc {
	return New(config.FromEnv())
})

// Handle is the golang-middleware entry point.
func Handle(w http.ResponseWriter, r *http.Request) {
	handler()(w, r)
}

// New builds deploy-fn's handler from its settings: gateway_url, and the
// basic-auth-user / basic-auth-password secrets of the gateway.
func New(cfg config.Config) http.HandlerFunc {
	disableHMAC, _ := cfg.Bool("disable_hmac", false)
	maxBody, err := cfg.Int("max_request_bytes", 1<<20)
	if err != nil || maxBody <= 0 {
		maxBody = 1 << 20
	}
	payloadPath := cfg.PayloadSecretPath()
	return handlers.MakeDeployHandler(handlers.DeployOptions{
		Gateway:       func() (deploy.Gateway, error) { return deploy.NewGateway(cfg) },
		PayloadSecret: func() ([]byte, error) { return os.ReadFile(payloadPath) },
		DisableHMAC:   disableHMAC,
		MaxBodyBytes:  maxBody,
		SpoolDir:      cfg.String("work_dir", os.TempDir()),
	})
}
