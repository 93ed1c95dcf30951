package provider

import (
	"context"
	"net/http"

	"github.com/openfaas/faas-provider/types"
)

// FunctionDeleter removes a function.
type FunctionDeleter interface {
	Delete(ctx context.Context, name string) error
}

// MakeDeleteHandler answers DELETE /system/functions with a JSON body
// {"functionName": …}. The task is stopped and everything made for the
// function removed before it answers 200.
func MakeDeleteHandler(deleter FunctionDeleter) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req types.DeleteFunctionRequest
		if err := decodeJSON(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		if err := validateNamespace(req.Namespace); err != nil {
			writeError(w, r, err)
			return
		}
		if err := validateFunctionName(req.FunctionName); err != nil {
			writeError(w, r, err)
			return
		}
		if err := deleter.Delete(r.Context(), req.FunctionName); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}
