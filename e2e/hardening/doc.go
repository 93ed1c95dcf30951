// Package hardening attacks build-fn over HTTP: hostile tars that must be
// refused before BuildKit with nothing written outside the work directory,
// a secrets scan of every place a build could leave a plaintext, and fault
// tests (buildkitd killed or restarted mid-build, registry down, client
// gone) that must end in a clean failed status, a freed slot and a
// successful next build; a registry of the local stack's shape (HTTPS from
// a private CA, htpasswd) refusing a certificate, a password, or being
// down, each a failed result naming it; credentials rotating under one
// running build-fn, through a credential helper and a rewritten config.json;
// and BuildKit's process sandbox, where a spy build
// that reads and kills whatever it sees in /proc must find nothing of a
// concurrent build holding a secret. The tests start build-fn in-process over the
// template's own server, and, where a build must run, a real registry and
// rootless buildkitd through internal/testenv. They never skip.
package hardening
