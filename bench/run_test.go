//go:build bench

package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestReport is `make bench`: every figure once, one table, written to
// docs/benchmarks.md (FNB_BENCH_OUT). It is built only with the bench tag
// (make bench), so that `go test ./...` neither runs nor skips it.
func TestReport(t *testing.T) {
	out := os.Getenv("FNB_BENCH_OUT")
	if out == "" {
		out = filepath.Join("..", "docs", "benchmarks.md")
	}
	started := time.Now()
	r := &report{}
	r.machine = describeMachine()

	say("starting registry and rootless buildkitd")
	s := &stack{testenv.StartStack(t, "", testenv.BuildKitOptions{})}
	r.machine = append(r.machine, s.describe(t)...)
	say("building cmd/fnb")
	bin := testenv.BuildFnb(t)
	fn := startFnb(t, bin, map[string]string{"buildkit_url": s.BK.Addr, "insecure_registries": s.Reg.Addr})

	small := contextSpec{
		Dockerfile: "FROM " + s.Base + "\nCOPY . /src\nRUN ls -l /src > /listing\n",
		Small: map[string]string{
			"handler.sh": "#!/bin/sh\n" + strings.Repeat("echo hello from the handler\n", 30),
			"README.md":  strings.Repeat("A small function.\n", 20),
		},
	}
	large := contextSpec{
		Dockerfile: "FROM " + s.Base + "\nCOPY . /ctx\nRUN du -s /ctx > /size\n",
		Files:      50, FileSize: 1 << 20, Seed: 50,
	}
	if section("warm") {
		say("identical rebuilds, small context (%d runs each)", runs(15))
		fnT, ctlT, _, _ := s.compare(t, fn, small, "small", runs(15), nil)
		r.add(fmt.Sprintf("Identical rebuild, small context (%s), median of %d", size(small.Size()), len(fnT)),
			secs(median(fnT)), "buildctl "+secs(median(ctlT)), ratio(median(fnT), median(ctlT)))

		say("identical rebuilds, 50 MiB context (%d runs each)", runs(11))
		fnT, ctlT, signT, recv := s.compare(t, fn, large, "50mb", runs(11), nil)
		r.add(fmt.Sprintf("Identical rebuild, 50 MiB context (%s; everything cached), median of %d", size(large.Size()), len(fnT)),
			secs(median(fnT)), "buildctl "+secs(median(ctlT)), ratio(median(fnT), median(ctlT)))
		r.add("… of which the client signing the request tar in a first pass, before its first byte is sent (the signature is a header; the tar is made again as it is sent)",
			secs(median(signT)), "buildctl "+secs(median(ctlT)), ratio(median(signT), median(ctlT)))
		r.add("… of which build-fn receiving the request while verifying and indexing it, as the client streams it (mean, from its fnbuilder_request_receive_seconds)",
			secs(recv), "buildctl "+secs(median(ctlT)), ratio(recv, median(ctlT)))
		rest := median(fnT) - median(signT) - recv
		r.add("… and the rest, BuildKit's build and push (median total − median signing − mean receiving)",
			secs(rest), "buildctl "+secs(median(ctlT)), ratio(rest, median(ctlT)))

		say("one small file changed, 50 MiB context (%d runs each)", runs(9))
		fnT, ctlT, _, _ = s.compare(t, fn, large, "50mb-one", runs(9), func(dir, side string, i int) error {
			return os.WriteFile(filepath.Join(dir, "stamp.txt"), fmt.Appendf(nil, "%s run %04d\n", side, i), 0o644)
		})
		r.add(fmt.Sprintf("One small file changed in the 50 MiB context (COPY runs again, a new layer is pushed), median of %d", len(fnT)),
			secs(median(fnT)), "buildctl "+secs(median(ctlT)), ratio(median(fnT), median(ctlT)))

		say("every file new, 50 MiB context (%d runs each)", runs(7))
		fnT, ctlT, _, _ = s.compare(t, fn, large, "50mb-new", runs(7), func(dir, side string, i int) error {
			fresh := large
			fresh.Seed = uint64(1000 + 100*i + len(side)) // "fn" and "ctl" never share bytes
			return fresh.WriteDir(dir)
		})
		r.add(fmt.Sprintf("Every file new in the 50 MiB context (nothing cached), median of %d", len(fnT)),
			secs(median(fnT)), "buildctl "+secs(median(ctlT)), ratio(median(fnT), median(ctlT)))
	}

	if section("nochange") {
		say("no-change rebuilds through go-sdk")
		n := runs(15)
		fnT, ctlT := s.noChange(t, fn, n)
		r.add(fmt.Sprintf("No-change rebuild end-to-end (go-sdk MakeTar + BuildWithStream, multi-stage function), median of %d", n),
			secs(median(fnT)), "buildctl "+secs(median(ctlT)), ratio(median(fnT), median(ctlT)))
	}

	if section("intake") {
		r.intake()
	}
	if section("rss") {
		r.rss(t, s, bin)
	}
	if section("429") {
		r.capacity(t, s, bin)
	}
	if section("guide") {
		say("the guide's warm rebuild on a TLS registry with authentication")
		n := runs(7)
		g := guideRebuild(t, bin, n)
		r.add(fmt.Sprintf("Warm rebuild after changing only the handler of a two-stage function, registry over TLS with a private CA and authentication (the Function Builder guide), faas-cli publish → build-fn, median of %d", n),
			secs(median(g.fn)), "buildctl "+secs(median(g.ctl)), ratio(median(g.fn), median(g.ctl)))
	}
	if section("async") {
		say("async builds through the local stack")
		r.async(t, s)
	}
	if section("cluster") {
		say("cold builds on the cluster (make cluster)")
		r.clusterCold(t)
	}

	r.notes = append(r.notes, contextNote(t))
	r.notes = append(r.notes, fmt.Sprintf("The whole run took %s; load average at the end: %s.", time.Since(started).Round(time.Second), loadAvg()))
	table := r.table()
	fmt.Print(table)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if prev, err := os.ReadFile(out); err == nil {
		r.previous = previousFigures(string(prev))
	}
	if err := os.WriteFile(out, []byte(r.document(table)), 0o644); err != nil {
		t.Fatal(err)
	}
	say("wrote %s", out)
}
