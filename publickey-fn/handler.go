// Package function is publickey-fn: GET answers the builder's current
// Curve25519 public key, {"key_id","algorithm","public_key"}, so clients can
// seal build secrets for it.
package function

import (
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

// Handle is the golang-middleware entry point: New's handler, made from
// the settings at the first request.
var Handle = handlers.Serve("publickey-fn", New)

// New builds publickey-fn's handler; its only settings are where the
// private keys are.
func New(cfg config.Config) (http.Handler, error) {
	return handlers.MakePublicKeyHandler(secrets.KeyRingLoader(cfg.PrivateKeyPaths()...)), nil
}
