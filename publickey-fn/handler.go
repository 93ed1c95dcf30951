// Package function is publickey-fn: GET answers the builder's current
// Curve25519 public key, {"key_id","algorithm","public_key"}, so clients can
// seal build secrets for it.
package function

import (
	"net/http"
	"sync"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
)

var handler = sync.OnceValue(func() http.HandlerFunc {
	return handlers.MakePublicKeyHandler(config.FromEnv().KeyRing)
})

// Handle is the golang-middleware entry point.
func Handle(w http.ResponseWriter, r *http.Request) {
	handler()(w, r)
}
