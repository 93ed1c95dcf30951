package handlers

import (
	"log"
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/reply"
)

// Serve is how every function starts: its settings are read once, and a
// bad setting does not crash the function (the platform would only
// restart it): it is logged, and every request is answered 500 with it.
func Serve(function string, newHandler func() (http.Handler, error)) http.Handler {
	h, err := newHandler()
	if err == nil {
		return h
	}
	log.Printf("%s: %v", function, err)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply.Error(w, http.StatusInternalServerError, function+" is misconfigured: "+err.Error())
	})
}
