// Package functions names fnbuilder's four functions and their
// golang-middleware handlers, for the two programs that serve one of them:
// the template's main.go and `fnb serve`.
package functions

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	buildfn "github.com/fnbuilder/fnbuilder/build-fn"
	deployfn "github.com/fnbuilder/fnbuilder/deploy-fn"
	publickeyfn "github.com/fnbuilder/fnbuilder/publickey-fn"
	sealfn "github.com/fnbuilder/fnbuilder/seal-fn"
)

// handlers maps each function folder to its Handle.
var handlers = map[string]http.HandlerFunc{
	"build-fn":     buildfn.Handle,
	"deploy-fn":    deployfn.Handle,
	"publickey-fn": publickeyfn.Handle,
	"seal-fn":      sealfn.Handle,
}

// Names lists the function folders, sorted.
func Names() []string { return slices.Sorted(maps.Keys(handlers)) }

// Lookup returns a function's handler, or an error naming the valid ones.
func Lookup(name string) (http.HandlerFunc, error) {
	h, ok := handlers[name]
	if !ok {
		return nil, fmt.Errorf("unknown function %q, want one of: %s", name, strings.Join(Names(), ", "))
	}
	return h, nil
}
