// Package function is build-fn. (Work in progress: the build route is being written.)
package function

import (
	"net/http"
	"sync"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
)

var handler = sync.OnceValue(func() http.Handler {
	cfg := config.FromEnv()
	mux := http.NewServeMux()
	mux.HandleFunc("/publickey", handlers.MakePublicKeyHandler(cfg.KeyRing))
	return mux
})

// Handle is the golang-middleware entry point.
func Handle(w http.ResponseWriter, r *http.Request) {
	handler().ServeHTTP(w, r)
}
