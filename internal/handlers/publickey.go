package handlers

import (
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

// KeyLoader returns the builder's key ring. It is called per request so
// that a rotated secret file is picked up without a restart.
type KeyLoader func() (*secrets.KeyRing, error)

// PublicKeyResponse is the body faas-cli expects from GET /publickey.
type PublicKeyResponse struct {
	KeyID     string `json:"key_id"`
	Algorithm string `json:"algorithm"`
	PublicKey string `json:"public_key"`
}

// MakePublicKeyHandler answers GET /publickey with the current key.
func MakePublicKeyHandler(loadKeys KeyLoader) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			reply.MethodNotAllowed(w, "GET")
			return
		}
		ring, err := loadKeys()
		if err != nil {
			reply.Error(w, http.StatusInternalServerError, "build secrets key is not usable: "+err.Error())
			return
		}
		key := ring.Current()
		reply.JSON(w, http.StatusOK, PublicKeyResponse{
			KeyID:     key.ID,
			Algorithm: secrets.Algorithm,
			PublicKey: string(key.Public),
		})
	}
}
