package handlers

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// DeployOptions configures MakeDeployHandler.
type DeployOptions struct {
	// Gateway returns the gateway client; an error means misconfiguration.
	Gateway func() (deploy.Gateway, error)
	// Tenants sign deploy requests with the same keys as their builds.
	Tenants     *tenant.Directory
	DisableHMAC bool
	// Policy is what every tenant shares; the request's tenant fills it in.
	Policy       deploy.Policy
	MaxBodyBytes int64
	SpoolDir     string
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
		spooled, t, err := verifier{o.Tenants, o.DisableHMAC, "X-Deploy-Signature"}.spool(w, r, r.Body, signature.Options{Dir: o.SpoolDir, Limit: o.MaxBodyBytes})
		if err != nil {
			return
		}
		defer spooled.Close()
		policy := o.Policy
		policy.Tenant = t

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
		// Refused before the gateway hears of it.
		if err := policy.Check(spec); err != nil {
			reply.Error(w, http.StatusBadRequest, err.Error())
			return
		}
		gw, err := o.Gateway()
		if err != nil {
			reply.Error(w, http.StatusInternalServerError, "gateway client: "+err.Error())
			return
		}
		res, err := deploy.Apply(r.Context(), gw, policy, spec)
		var gwErr *deploy.GatewayError
		var policyErr *deploy.PolicyError
		switch {
		case errors.As(err, &policyErr):
			reply.Error(w, http.StatusBadRequest, err.Error())
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
