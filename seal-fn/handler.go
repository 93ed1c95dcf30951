// Package function is seal-fn: POST {"secrets":{...},"secrets_base64":{...},
// "public_key":"..."} answers a com.openfaas.secrets envelope, for clients
// that have no NaCl library. Without public_key it seals for this builder.
package function

import (
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

// defaultMaxBody bounds the JSON request; secrets are small.
const defaultMaxBody = 1 << 20

// Handle is the golang-middleware entry point: New's handler, made from
// the settings at the first request.
var Handle = handlers.Serve("seal-fn", New)

// New builds seal-fn's handler from its settings.
func New(cfg config.Config) (http.Handler, error) {
	maxBody, err := cfg.Positive("max_request_bytes", defaultMaxBody)
	if err != nil {
		return nil, err
	}
	return handlers.MakeSealHandler(secrets.KeyRingLoader(cfg.PrivateKeyPaths()...), maxBody), nil
}
