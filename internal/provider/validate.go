package provider

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
	"github.com/fnbuilder/fnbuilder/internal/provider/supervisor"
)

// Namespace is the only OpenFaaS namespace this provider serves.
const Namespace = "openfaas-fn"

// maxBody bounds request bodies of the /system API.
const maxBody = 1 << 20

var (
	// functionName is a DNS-1123 label: it becomes a container ID, a host
	// name and part of a network namespace name.
	functionName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// secretName becomes a file name under the secrets dir and under
	// /var/openfaas/secrets.
	secretName = regexp.MustCompile(`^[A-Za-z0-9]([-._A-Za-z0-9]{0,251}[A-Za-z0-9])?$`)
)

// jsonHandler decodes the request's JSON body into a T and hands it to act;
// it answers status, or the error of either as writeError maps it.
func jsonHandler[T any](status int, act func(r *http.Request, req T) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req T
		err := decodeJSON(w, r, &req)
		if err == nil {
			err = act(r, req)
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(status)
	}
}

// decodeJSON reads one JSON value of at most maxBody bytes.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if r.Body == nil {
		return badRequest("empty body")
	}
	body := http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return badRequest("body larger than %d bytes", maxBody)
		}
		if errors.Is(err, io.EOF) {
			return badRequest("empty body")
		}
		return badRequest("invalid JSON: %v", err)
	}
	return nil
}

func validateNamespace(ns string) error {
	if ns != "" && ns != Namespace {
		return badRequest("namespace %q is not served: this provider has only %q", ns, Namespace)
	}
	return nil
}

func validateFunctionName(name string) error {
	if !functionName.MatchString(name) {
		return badRequest("function name %q: must be lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit", name)
	}
	return nil
}

func validateSecretName(name string) error {
	if !secretName.MatchString(name) {
		return badRequest("secret name %q: letters, digits, '-', '_' and '.', at most 253, starting and ending with a letter or digit", name)
	}
	return nil
}

// validateDeployment checks a deploy or update request and returns it with
// the namespace filled in.
func validateDeployment(d types.FunctionDeployment) (types.FunctionDeployment, error) {
	if err := validateFunctionName(d.Service); err != nil {
		return d, err
	}
	if err := validateNamespace(d.Namespace); err != nil {
		return d, err
	}
	if strings.TrimSpace(d.Image) == "" {
		return d, badRequest("image is required")
	}
	if _, err := runtime.Normalize(d.Image); err != nil {
		return d, badRequest("%v", err)
	}
	for k := range d.EnvVars {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return d, badRequest("environment variable name %q is not valid", k)
		}
	}
	seen := map[string]bool{}
	for _, s := range d.Secrets {
		if err := validateSecretName(s); err != nil {
			return d, err
		}
		if seen[s] {
			return d, badRequest("secret %q listed twice", s)
		}
		seen[s] = true
	}
	if d.Limits != nil {
		if d.Limits.Memory != "" {
			if _, err := supervisor.ParseMemory(d.Limits.Memory); err != nil {
				return d, badRequest("%v", err)
			}
		}
		if d.Limits.CPU != "" {
			if _, err := supervisor.ParseCPU(d.Limits.CPU); err != nil {
				return d, badRequest("%v", err)
			}
		}
		if d.Limits.NvidiaGPU != "" || d.Limits.AmdGPU != "" || d.Limits.IntelGPU != "" {
			return d, badRequest("GPU limits are not supported by this provider")
		}
	}
	d.Namespace = Namespace
	return d, nil
}

// functionFromPath splits "name" or "name.namespace" as the gateway sends
// function names.
func functionFromPath(s string) (string, error) {
	name, ns, found := strings.Cut(s, ".")
	if found {
		if err := validateNamespace(ns); err != nil {
			return "", err
		}
	}
	if err := validateFunctionName(name); err != nil {
		return "", err
	}
	return name, nil
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, fmt.Sprintf("encode response: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}
