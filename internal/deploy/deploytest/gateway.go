// Package deploytest is a fake OpenFaaS gateway for the tests of what
// deploys: it answers go-sdk's calls as the gateway would, from queues of
// status codes, and records what it was sent.
package deploytest

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// Acme is the tenant the policy tests deploy as: its own images, shared
// base images, two namespaces and its secrets.
var Acme = tenant.Tenant{
	Name:          "acme",
	PayloadSecret: "payload-secret-acme",
	Images:        []string{"registry.example.com/acme/"},
	BaseImages:    []string{"registry.example.com/library/"},
	Namespaces:    []string{"openfaas-fn", "acme-fn"},
	Secrets:       []string{"acme-*", "shared-db"},
}

// Gateway implements deploy.Gateway.
type Gateway struct {
	// UpdateCodes and DeployCodes are the status codes of successive calls; the
	// last one repeats, and none means 200. A non-2xx code is also an
	// error, as go-sdk reports it.
	UpdateCodes, DeployCodes []int
	// Functions is what GetFunctions lists, in any namespace.
	Functions []types.FunctionStatus

	mu               sync.Mutex
	updates, deploys []types.FunctionDeployment
}

// Owned is a function as the gateway lists it, labelled with an owner
// (none when owner is "").
func Owned(name, ownerLabel, owner string) types.FunctionStatus {
	fn := types.FunctionStatus{Name: name}
	if owner != "" {
		fn.Labels = &map[string]string{ownerLabel: owner}
	}
	return fn
}

func next(codes *[]int) int {
	if len(*codes) == 0 {
		return http.StatusOK
	}
	code := (*codes)[0]
	if len(*codes) > 1 {
		*codes = (*codes)[1:]
	}
	return code
}

func answer(code int) (int, error) {
	if code >= 200 && code < 300 {
		return code, nil
	}
	return code, fmt.Errorf("unexpected status code: %d, message: %q", code, http.StatusText(code))
}

// Update records spec and answers the next Update code.
func (g *Gateway) Update(_ context.Context, spec types.FunctionDeployment) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.updates = append(g.updates, spec)
	return answer(next(&g.UpdateCodes))
}

// Deploy records spec and answers the next Deploy code.
func (g *Gateway) Deploy(_ context.Context, spec types.FunctionDeployment) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deploys = append(g.deploys, spec)
	return answer(next(&g.DeployCodes))
}

// GetFunctions lists Functions.
func (g *Gateway) GetFunctions(context.Context, string) ([]types.FunctionStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]types.FunctionStatus(nil), g.Functions...), nil
}

// Calls counts the updates and deploys sent.
func (g *Gateway) Calls() (updates, deploys int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.updates), len(g.deploys)
}

// Updates are the specs sent to Update.
func (g *Gateway) Updates() []types.FunctionDeployment {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]types.FunctionDeployment(nil), g.updates...)
}

// Deploys are the specs sent to Deploy.
func (g *Gateway) Deploys() []types.FunctionDeployment {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]types.FunctionDeployment(nil), g.deploys...)
}
