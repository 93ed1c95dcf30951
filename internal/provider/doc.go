// Package provider is fnbuilder's single-machine OpenFaaS provider: the
// stand-in for faas-netes that the gateway calls for /system/* and
// /function/NAME. Functions run as containerd containers, one task each, in
// their own network namespaces on a CNI bridge (see the runtime, network,
// supervisor and state packages below this one).
//
// This package is the HTTP side only: one file per handler, each built by a
// Make…Handler constructor from the few methods it needs, the routes
// (those of faas-provider's bootstrap.Serve), errors mapped to status codes
// in errors.go, and Start, which assembles the pieces.
//
// What it does not do: more than one replica per function, log streaming
// (container output goes to files under the state dir), usage metrics,
// namespaces other than openfaas-fn, resource requests and constraints
// (kept and reported, not acted on), and registry authentication.
package provider
