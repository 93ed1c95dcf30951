// Package function is deploy-fn: POST a signed deploy spec (name, image,
// namespace, env, labels, annotations, secrets, limits) and it creates or
// updates the function through the OpenFaaS gateway with go-sdk.
package function

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	sdk "github.com/openfaas/go-sdk"

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
		Gateway:       func() (deploy.Gateway, error) { return Gateway(cfg) },
		PayloadSecret: func() ([]byte, error) { return os.ReadFile(payloadPath) },
		DisableHMAC:   disableHMAC,
		MaxBodyBytes:  maxBody,
		SpoolDir:      cfg.String("work_dir", os.TempDir()),
	})
}

// Gateway is a go-sdk client for the configured gateway. Credentials are
// read per call so that a rotated secret is used without a restart.
func Gateway(cfg config.Config) (*sdk.Client, error) {
	u, err := url.Parse(cfg.String("gateway_url", "http://gateway.openfaas:8080"))
	if err != nil {
		return nil, err
	}
	var auth sdk.ClientAuth
	if user, err := cfg.ReadSecret(cfg.String("gateway_user_secret", "basic-auth-user")); err == nil {
		pass, err := cfg.ReadSecret(cfg.String("gateway_password_secret", "basic-auth-password"))
		if err != nil {
			return nil, err
		}
		auth = &sdk.BasicAuth{Username: strings.TrimSpace(string(user)), Password: strings.TrimSpace(string(pass))}
	}
	return sdk.NewClient(u, auth, http.DefaultClient), nil
}
