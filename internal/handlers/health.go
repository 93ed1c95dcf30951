package handlers

import (
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/schedule"
)

// MakeHealthHandler answers /healthz: the process serves requests.
func MakeHealthHandler() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("OK\n"))
	}
}

// MakeReadyHandler answers /ready: 503 while every build slot is taken, so
// a load balancer sends new builds to another replica.
func MakeReadyHandler(slots *schedule.Slots) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if slots != nil && slots.Full() {
			http.Error(w, "at capacity", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("OK\n"))
	}
}
