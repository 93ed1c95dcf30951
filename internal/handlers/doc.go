// Package handlers holds one HTTP handler per file, each made by a
// Make...Handler constructor that receives its dependencies. The function
// folders (publickey-fn, seal-fn, build-fn, deploy-fn) only wire a handler
// to its configuration. HTTP status codes are decided here and nowhere else.
package handlers
