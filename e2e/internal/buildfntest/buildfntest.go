// Package buildfntest serves build-fn in-process for the end-to-end tests,
// behind the golang-middleware template's own server.
package buildfntest

import (
	"testing"

	buildfn "github.com/fnbuilder/fnbuilder/build-fn"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// Serve serves build-fn with these settings until the test ends and
// returns its base URL. wrap, when not nil, wraps the pipeline's BuildKit
// runner, so a test can count or watch the solves.
func Serve(t testing.TB, settings map[string]string, wrap func(pipeline.Runner) pipeline.Runner) string {
	t.Helper()
	cfg := config.FromMap(settings)
	opts, err := buildfn.Options(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		opts.Pipeline.Runner = wrap(opts.Pipeline.Runner)
	}
	return testenv.Serve(t, buildfn.Router(cfg, opts), cfg)
}
