// Package bench measures fnbuilder against a direct buildctl build on the
// same buildkitd, and measures build-fn's intake, memory and refusals.
//
// `make bench` runs TestReport (built only with the bench tag), which
// starts a registry and a rootless buildkitd through internal/testenv,
// serves build-fn as a subprocess (`fnb serve build-fn`), takes every
// measurement once on this machine, prints one table and writes it, with
// the machine's description, to docs/benchmarks.md. The figures report;
// nothing asserts a timing.
//
// BenchmarkIntake and BenchmarkHMAC are ordinary `go test -bench`
// benchmarks that TestReport also runs through testing.Benchmark.
package bench
