package handlers

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// TenantHeader lets a client that can send it name its tenant, so that
// only that tenant's key is tried. faas-cli and go-sdk send nothing of the
// kind: then every tenant's key is tried and the one that verifies names
// the tenant.
const TenantHeader = "X-Fnbuilder-Tenant"

// verifier checks the signature of build, deploy and result requests, the
// one place that knows how a request finds its tenant.
type verifier struct {
	tenants  *tenant.Directory
	disabled bool   // disable_hmac: anything goes, as the only tenant
	header   string // X-Build-Signature or X-Deploy-Signature
}

// spool stores a verified body and names its tenant; on error it has
// answered the client already.
func (v verifier) spool(w http.ResponseWriter, r *http.Request, body io.Reader, opts signature.Options) (*signature.Spooled, tenant.Tenant, error) {
	if v.disabled {
		s, err := signature.SpoolUnverified(body, opts)
		if err != nil {
			v.refuse(w, err)
			return nil, tenant.Tenant{}, err
		}
		return s, v.tenants.Tenants()[0], nil
	}
	tenants, keys, err := v.candidates(w, r)
	if err != nil {
		return nil, tenant.Tenant{}, err
	}
	s, i, err := signature.Spool(body, r.Header.Get(v.header), keys, opts)
	if err != nil {
		v.refuse(w, err)
		return nil, tenant.Tenant{}, err
	}
	return s, tenants[i], nil
}

// verify checks a signature over a small message, such as a call id.
func (v verifier) verify(w http.ResponseWriter, r *http.Request, msg []byte) (tenant.Tenant, error) {
	if v.disabled {
		return v.tenants.Tenants()[0], nil
	}
	tenants, keys, err := v.candidates(w, r)
	if err != nil {
		return tenant.Tenant{}, err
	}
	i, err := signature.Verify(msg, r.Header.Get(v.header), keys)
	if err != nil {
		v.refuse(w, err)
		return tenant.Tenant{}, err
	}
	return tenants[i], nil
}

func (v verifier) candidates(w http.ResponseWriter, r *http.Request) ([]tenant.Tenant, [][]byte, error) {
	tenants, keys, err := v.tenants.Candidates(r.Header.Get(TenantHeader))
	switch {
	case errors.Is(err, tenant.ErrUnknown):
		reply.Error(w, http.StatusUnauthorized, fmt.Sprintf("%s: %v", TenantHeader, err))
	case err != nil:
		log.Printf("%s: %v", v.header, err)
		reply.Error(w, http.StatusInternalServerError, "the builder's payload secret is not usable")
	}
	return tenants, keys, err
}

// refuse answers a body that could not be stored or verified.
func (v verifier) refuse(w http.ResponseWriter, err error) {
	if refuseUpload(w, err) {
		return
	}
	code, msg := spoolStatus(err, v.header)
	reply.Error(w, code, msg)
}
