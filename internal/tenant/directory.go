package tenant

import (
	"errors"
	"fmt"
	"log"

	"github.com/fnbuilder/fnbuilder/internal/signature"
)

// ErrUnknown means a request named a tenant the builder does not have.
var ErrUnknown = errors.New("unknown tenant")

// Directory is the builder's tenants and how to read their keys. Keys are
// read per request, so that a rotated payload secret is used without a
// restart.
type Directory struct {
	tenants []Tenant
	readKey func(secret string) ([]byte, error)
}

// NewDirectory serves tenants whose keys readKey returns by secret name.
func NewDirectory(tenants []Tenant, readKey func(secret string) ([]byte, error)) *Directory {
	return &Directory{tenants: tenants, readKey: readKey}
}

// Tenants lists them, sorted by name.
func (d *Directory) Tenants() []Tenant { return d.tenants }

// Candidates are the tenants a signature may belong to, with their HMAC
// keys in the same order. A named tenant (from a header) narrows the
// search to its key alone. A tenant whose secret cannot be read is left
// out and logged, so that one broken secret does not stop the others; no
// usable key at all is an error.
func (d *Directory) Candidates(named string) ([]Tenant, [][]byte, error) {
	var tenants []Tenant
	var keys [][]byte
	var broken error
	for _, t := range d.tenants {
		if named != "" && t.Name != named {
			continue
		}
		data, err := d.readKey(t.PayloadSecret)
		key := signature.Key(data)
		if err == nil && len(key) == 0 {
			err = errors.New("empty")
		}
		if err != nil {
			broken = fmt.Errorf("payload secret %q of tenant %q: %w", t.PayloadSecret, t.Name, err)
			log.Printf("tenant: %v", broken)
			continue
		}
		tenants = append(tenants, t)
		keys = append(keys, key)
	}
	switch {
	case len(keys) > 0:
		return tenants, keys, nil
	case named != "" && broken == nil:
		return nil, nil, fmt.Errorf("%w %q", ErrUnknown, named)
	case broken == nil:
		return nil, nil, errors.New("no tenants")
	}
	return nil, nil, broken
}

// PayloadSecrets are every tenant's payload secret names: no function a
// tenant deploys may mount one.
func (d *Directory) PayloadSecrets() []string {
	names := make([]string, len(d.tenants))
	for i, t := range d.tenants {
		names[i] = t.PayloadSecret
	}
	return names
}
