// Package function is build-fn: POST /build (or POST / through the gateway)
// takes an HMAC-signed tar, builds it on BuildKit and pushes the image,
// answering JSON or streamed NDJSON. It also answers GET /publickey, because
// faas-cli asks for it at the root of the --remote-builder address.
package function

import "github.com/fnbuilder/fnbuilder/internal/handlers"

// Handle is the golang-middleware entry point: New's handler, made from
// the settings at the first request.
var Handle = handlers.Serve("build-fn", New)
