// Package function is build-fn: POST /build (or POST / through the gateway)
// takes an HMAC-signed tar, builds it on BuildKit and pushes the image,
// answering JSON or streamed NDJSON. It also answers GET /publickey, because
// faas-cli asks for it at the root of the --remote-builder address.
package function

import (
	"log"
	"net/http"
	"sync"

	"github.com/fnbuilder/fnbuilder/internal/config"
)

var handler = sync.OnceValue(func() http.Handler {
	h, err := New(config.FromEnv())
	if err != nil {
		// A bad setting must not crash the function: every request says why.
		log.Printf("build-fn: %v", err)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "build-fn is misconfigured: "+err.Error(), http.StatusInternalServerError)
		})
	}
	return h
})

// Handle is the golang-middleware entry point.
func Handle(w http.ResponseWriter, r *http.Request) {
	handler().ServeHTTP(w, r)
}
