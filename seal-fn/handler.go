// Package function is seal-fn: POST {"secrets":{...},"secrets_base64":{...},
// "public_key":"..."} answers a com.openfaas.secrets envelope, for clients
// that have no NaCl library. Without public_key it seals for this builder.
package function

import (
	"net/http"
	"sync"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
)

// defaultMaxBody bounds the JSON request; secrets are small.
const defaultMaxBody = 1 << 20

var handler = sync.OnceValue(func() http.HandlerFunc {
	cfg := config.FromEnv()
	maxBody, err := cfg.Int("max_request_bytes", defaultMaxBody)
	if err != nil || maxBody <= 0 {
		maxBody = defaultMaxBody
	}
	return handlers.MakeSealHandler(cfg.KeyRing, maxBody)
})

// Handle is the golang-middleware entry point.
func Handle(w http.ResponseWriter, r *http.Request) {
	handler()(w, r)
}
