package handlers

import (
	"log"
	"net/http"
	"sync"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/reply"
)

// Serve is how every function starts: its settings are read from the
// environment once, at the first request, and a bad setting does not crash
// the function (the platform would only restart it): it is logged, and
// every request is answered 500 with it.
func Serve(function string, newHandler func(config.Config) (http.Handler, error)) http.HandlerFunc {
	handler := sync.OnceValue(func() http.Handler {
		h, err := newHandler(config.FromEnv())
		if err == nil {
			return h
		}
		log.Printf("%s: %v", function, err)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reply.Error(w, http.StatusInternalServerError, function+" is misconfigured: "+err.Error())
		})
	})
	return func(w http.ResponseWriter, r *http.Request) { handler().ServeHTTP(w, r) }
}
