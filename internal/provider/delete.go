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
	return jsonHandler(http.StatusOK, func(r *http.Request, req types.DeleteFunctionRequest) error {
		if err := validateNamespace(req.Namespace); err != nil {
			return err
		}
		if err := validateFunctionName(req.FunctionName); err != nil {
			return err
		}
		return deleter.Delete(r.Context(), req.FunctionName)
	})
}
