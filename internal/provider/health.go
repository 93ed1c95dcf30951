package provider

import (
	"context"
	"net/http"
	"time"
)

// RuntimePinger checks that the container runtime answers.
type RuntimePinger interface {
	Version(ctx context.Context) (string, error)
}

// MakeHealthHandler answers GET /healthz: 200 while containerd answers
// within two seconds, 503 otherwise.
func MakeHealthHandler(runtime RuntimePinger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := runtime.Version(ctx); err != nil {
			http.Error(w, "containerd: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("OK"))
	}
}
