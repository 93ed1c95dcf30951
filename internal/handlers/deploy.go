package handlers

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/signature"
)

// DeployOptions configures MakeDeployHandler.
type DeployOptions struct {
	// Gateway returns the gateway client; an error means misconfiguration.
	Gateway func() (deploy.Gateway, error)
	// PayloadSecret is the HMAC key that signs deploy requests, the same
	// secret build requests use.
	PayloadSecret func() ([]byte, error)
	DisableHMAC   bool
	MaxBodyBytes  int64
	SpoolDir      string
}

// MakeDeployHandler answers POST with a deploy.Spec JSON body signed in
// X-Deploy-Signature (sha256=HMAC of the body, like X-Build-Signature):
// deploying is as powerful as building, so it is never anonymous.
func MakeDeployHandler(o DeployOptions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			reply.MethodNotAllowed(w, "POST")
			return
		}
		var key []byte
		if !o.DisableHMAC {
			data, err := o.PayloadSecret()
			if key = signature.Key(data); err != nil || len(key) == 0 {
				reply.Error(w, http.StatusInternalServerError, "the payload secret is not usable")
				return
			}
		}
		var spooled *signature.Spooled
		var err error
		if o.DisableHMAC {
			spooled, err = signature.SpoolUnverified(r.Body, signature.Options{Dir: o.SpoolDir, Limit: o.MaxBodyBytes})
		} else {
			spooled, err = signature.Spool(r.Body, r.Header.Get("X-Deploy-Signature"), key, signature.Options{Dir: o.SpoolDir, Limit: o.MaxBodyBytes})
		}
		if err != nil {
			code, msg := spoolStatus(err, "X-Deploy-Signature")
			reply.Error(w, code, msg)
			return
		}
		defer spooled.Close()

		var spec deploy.Spec
		dec := json.NewDecoder(spooled.Reader())
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			reply.Error(w, http.StatusBadRequest, "invalid deploy spec: "+err.Error())
			return
		}
		if err := spec.Validate(); err != nil {
			reply.Error(w, http.StatusBadRequest, err.Error())
			return
		}
		gw, err := o.Gateway()
		if err != nil {
			reply.Error(w, http.StatusInternalServerError, "gateway client: "+err.Error())
			return
		}
		res, err := deploy.Apply(r.Context(), gw, spec)
		var gwErr *deploy.GatewayError
		switch {
		case errors.As(err, &gwErr):
			reply.Error(w, gatewayStatus(gwErr.Status), err.Error())
		case err != nil:
			reply.Error(w, http.StatusBadGateway, err.Error())
		default:
			reply.JSON(w, http.StatusOK, res)
		}
	}
}

// gatewayStatus passes the gateway's own status on; a failed connection
// (reported by go-sdk as 502) stays 502.
func gatewayStatus(status int) int {
	if status < 400 || status > 599 {
		return http.StatusBadGateway
	}
	return status
}
