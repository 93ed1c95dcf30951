package handlers

import (
	"net/http"
	"strconv"

	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/results"
)

// MakeResultHandler answers GET /results/{id}: the stored result of an
// async build, for a platform whose callback receiver was down. The
// request is signed like a build, over the call id itself:
// X-Build-Signature: sha256=HMAC(payload secret, id), under the key of the
// tenant whose build it was. A stored result
// answers 200 with the build's JSON and X-Build-Code, the status the build
// answered; a build still running answers 202; an unknown id 404.
func MakeResultHandler(o BuildOptions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			reply.MethodNotAllowed(w, "GET")
			return
		}
		id := r.PathValue("id")
		if o.Results == nil {
			reply.Error(w, http.StatusNotFound, "this builder keeps no results (results_dir is not set)")
			return
		}
		if !results.ValidID(id) {
			reply.Error(w, http.StatusBadRequest, "invalid call id")
			return
		}
		// The key that signed the id names the tenant, and a tenant sees
		// only its own results: another's call id is simply unknown.
		t, err := verifier{o.Tenants, o.DisableHMAC, "X-Build-Signature"}.verify(w, r, []byte(id))
		if err != nil {
			return
		}
		key := resultID(t, id)
		if res, ok := o.Results.Get(key); ok {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Build-Code", strconv.Itoa(res.Code))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(res.Body)
			return
		}
		if o.Results.Running(key) {
			reply.JSON(w, http.StatusAccepted, map[string]string{"status": "in_progress"})
			return
		}
		reply.Error(w, http.StatusNotFound, "no result for call id "+id+" (unknown or expired)")
	}
}
