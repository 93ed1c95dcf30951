package handlers

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

// SealRequest is the body of POST to seal-fn. Values in Secrets are UTF-8
// text; binary values go in SecretsBase64 as standard base64.
type SealRequest struct {
	Secrets       map[string]string `json:"secrets"`
	SecretsBase64 map[string]string `json:"secrets_base64"`
	// PublicKey is raw base64 or a /publickey JSON document; empty means
	// the builder's own current key.
	PublicKey string `json:"public_key"`
}

// MakeSealHandler seals secrets for clients with no NaCl library and
// answers the com.openfaas.secrets envelope as YAML.
func MakeSealHandler(loadKeys KeyLoader, maxBody int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			reply.MethodNotAllowed(w, "POST")
			return
		}
		var req SealRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				reply.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", maxBody))
				return
			}
			reply.Error(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
			return
		}
		values, err := req.values()
		if err != nil {
			reply.Error(w, http.StatusBadRequest, err.Error())
			return
		}

		publicKey, err := sealingKey(req.PublicKey, loadKeys)
		if err != nil {
			code := http.StatusBadRequest
			if req.PublicKey == "" {
				code = http.StatusInternalServerError
			}
			reply.Error(w, code, err.Error())
			return
		}
		envelope, err := secrets.Seal(publicKey, values)
		if err != nil {
			reply.Error(w, http.StatusBadRequest, err.Error())
			return
		}
		keyID, _ := secrets.KeyID(publicKey)
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Content-Disposition", `attachment; filename="`+secrets.FileName+`"`)
		w.Header().Set("X-Key-Id", keyID)
		_, _ = w.Write(envelope)
	}
}

func (req SealRequest) values() (map[string][]byte, error) {
	values := make(map[string][]byte, len(req.Secrets)+len(req.SecretsBase64))
	for name, v := range req.Secrets {
		values[name] = []byte(v)
	}
	for name, v := range req.SecretsBase64 {
		if _, dup := values[name]; dup {
			return nil, fmt.Errorf("secret %q is given in both secrets and secrets_base64", name)
		}
		raw, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("secrets_base64[%q]: not standard base64: %v", name, err)
		}
		values[name] = raw
	}
	if len(values) == 0 {
		return nil, errors.New("no secrets given: set \"secrets\" or \"secrets_base64\"")
	}
	for name := range values {
		if err := secrets.ValidateName(name); err != nil {
			return nil, err
		}
	}
	return values, nil
}

func sealingKey(given string, loadKeys KeyLoader) ([]byte, error) {
	if given != "" {
		return secrets.DecodePublicKey([]byte(given))
	}
	ring, err := loadKeys()
	if err != nil {
		return nil, fmt.Errorf("no public_key given and the builder's key is not usable: %w", err)
	}
	return ring.Current().Public, nil
}
