package provider

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/provider/supervisor"
)

// SecretStore keeps secret values; they are never sent back.
type SecretStore interface {
	SecretNames() ([]string, error)
	CreateSecret(name string, value []byte) error
	UpdateSecret(name string, value []byte) error
	DeleteSecret(name string) error
}

// SecretUsers names the functions that mount a secret.
type SecretUsers interface {
	SecretUsers(name string) ([]string, error)
}

// MakeSecretsHandler answers /system/secrets: GET lists names (never
// values), POST creates (409 if it exists), PUT replaces the value (404 if
// missing; running functions see the new value at once), DELETE removes
// (409 while a function still mounts it).
func MakeSecretsHandler(store SecretStore, users SecretUsers) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			listSecrets(w, r, store)
		case http.MethodPost, http.MethodPut:
			sec, value, err := readSecret(w, r, true)
			if err != nil {
				writeError(w, r, err)
				return
			}
			if r.Method == http.MethodPost {
				err = store.CreateSecret(sec.Name, value)
			} else {
				err = store.UpdateSecret(sec.Name, value)
			}
			if err != nil {
				writeError(w, r, err)
				return
			}
			if r.Method == http.MethodPost {
				w.WriteHeader(http.StatusCreated)
			} else {
				w.WriteHeader(http.StatusOK)
			}
		case http.MethodDelete:
			sec, _, err := readSecret(w, r, false)
			if err != nil {
				writeError(w, r, err)
				return
			}
			fns, err := users.SecretUsers(sec.Name)
			if err != nil {
				writeError(w, r, err)
				return
			}
			if len(fns) > 0 {
				writeError(w, r, fmt.Errorf("secret %s: %w by functions %s", sec.Name, supervisor.ErrInUse, strings.Join(fns, ", ")))
				return
			}
			if err := store.DeleteSecret(sec.Name); err != nil {
				writeError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusOK)
		default:
			w.Header().Set("Allow", "GET, POST, PUT, DELETE")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	}
}

func listSecrets(w http.ResponseWriter, r *http.Request, store SecretStore) {
	if err := validateNamespace(r.URL.Query().Get("namespace")); err != nil {
		writeError(w, r, err)
		return
	}
	names, err := store.SecretNames()
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := make([]types.Secret, 0, len(names))
	for _, n := range names {
		out = append(out, types.Secret{Name: n, Namespace: Namespace})
	}
	writeJSON(w, http.StatusOK, out)
}

// readSecret decodes and checks a secret request; withValue requires a
// value (Value, or RawValue when Value is empty).
func readSecret(w http.ResponseWriter, r *http.Request, withValue bool) (types.Secret, []byte, error) {
	var sec types.Secret
	if err := decodeJSON(w, r, &sec); err != nil {
		return sec, nil, err
	}
	if err := validateNamespace(sec.Namespace); err != nil {
		return sec, nil, err
	}
	if err := validateSecretName(sec.Name); err != nil {
		return sec, nil, err
	}
	if !withValue {
		return sec, nil, nil
	}
	value := []byte(sec.Value)
	if len(value) == 0 {
		value = sec.RawValue
	}
	if len(value) == 0 {
		return sec, nil, badRequest("secret %s: value or rawValue is required", sec.Name)
	}
	return sec, value, nil
}
