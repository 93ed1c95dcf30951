// Package e2e holds end-to-end tests that need real daemons: a registry
// and buildkitd, started by the tests themselves through internal/testenv
// (run hack/install.sh first). They never skip: a missing daemon fails.
package e2e
