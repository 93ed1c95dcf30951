// Package function is build-fn: POST /build (or POST / through the gateway)
// takes an HMAC-signed tar, builds it on BuildKit and pushes the image,
// answering JSON or streamed NDJSON. It also answers GET /publickey, because
// faas-cli asks for it at the root of the --remote-builder address.
package function

import (
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/handlers"
)

var handle = handlers.Serve("build-fn", New)

// Handle is the golang-middleware entry point.
func Handle(w http.ResponseWriter, r *http.Request) { handle(w, r) }
