// Package reply writes JSON answers. Every error reply has the same shape,
// {"status":"failed","error":"..."}, because old faas-cli and the example
// clients parse any body as JSON before looking at the status code.
package reply

import (
	"encoding/json"
	"net/http"
)

// JSON writes v with the given status code.
func JSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Error writes the common error body.
func Error(w http.ResponseWriter, code int, msg string) {
	JSON(w, code, map[string]string{"status": "failed", "error": msg})
}

// MethodNotAllowed answers 405 naming the allowed methods.
func MethodNotAllowed(w http.ResponseWriter, allowed string) {
	w.Header().Set("Allow", allowed)
	Error(w, http.StatusMethodNotAllowed, "method not allowed, use "+allowed)
}
