// Package testenv starts the real daemons the end-to-end tests need — a
// local plain-HTTP registry (Debian's docker-registry) and buildkitd v0.33.1,
// rootless under rootlesskit when it can — through internal/daemon's
// recipes, the same the local stack uses, and gives helpers to inspect what
// ends up in the registry and on disk.
//
// It never skips: when a binary is missing the test fails loudly with its
// name and "run hack/install.sh". Every daemon is stopped and its state
// removed in t.Cleanup.
//
// Environment:
//
//	FNB_TOOLS          tools dir (default $HOME/.cache/fnbuilder); binaries in $FNB_TOOLS/bin
//	FNB_BUILDKIT_MODE  "rootless" or "root" forces that mode (failure is fatal);
//	                   unset tries rootless first and falls back to root
package testenv
