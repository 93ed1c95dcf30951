package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/internal/buildtar"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// row is one line of the table.
type row struct {
	what, fnbuilder, baseline, result string
}

type report struct {
	machine  []string // "key: value" lines
	rows     []row
	notes    []string
	previous string // the machine and results of the run before, as written then
}

// previousFigures is the machine and results sections of an earlier
// docs/benchmarks.md, its headings one level down, without its own
// previous run: one earlier run is kept for comparison.
func previousFigures(doc string) string {
	start := strings.Index(doc, "## Machine")
	end := strings.Index(doc, "## How each figure is taken")
	if start < 0 || end < start {
		return ""
	}
	return "#" + strings.ReplaceAll(doc[start:end], "\n## ", "\n### ")
}

func (r *report) add(what, fn, base, result string) {
	r.rows = append(r.rows, row{what, fn, base, result})
	say("%s | %s | %s | %s", what, fn, base, result)
}

// say reports progress on stderr; the table alone goes to stdout.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// runs is how many timed runs a median is taken over.
func runs(def int) int {
	if n, err := strconv.Atoi(os.Getenv("FNB_BENCH_RUNS")); err == nil && n > 0 {
		return n
	}
	return def
}

// section says whether FNB_BENCH_ONLY (a comma-separated list of warm,
// nochange, intake, rss, 429, guide, async, cluster) selects this part;
// unset means all.
func section(name string) bool {
	only := strings.TrimSpace(os.Getenv("FNB_BENCH_ONLY"))
	return only == "" || slices.Contains(strings.Split(only, ","), name)
}

// intake runs the intake benchmarks and openssl's SHA-256 speed.
func (r *report) intake() {
	say("intake benchmarks (256 MiB)")
	_ = flag.Set("test.benchtime", "3s")
	intakeMB := mbps(testing.Benchmark(BenchmarkIntake))
	spoolMB := mbps(testing.Benchmark(BenchmarkSpool))
	indexMB := mbps(testing.Benchmark(BenchmarkIndex))
	hmacMB := mbps(testing.Benchmark(BenchmarkHMAC))
	opensslMB, opensslErr := opensslSHA256()
	base := "openssl sha256 " + fmt.Sprintf("%.0f MB/s", opensslMB)
	if opensslErr != nil {
		base = "openssl: " + opensslErr.Error()
	}
	r.add("Intake of a 256 MiB request: HMAC verify while receiving it into a file, the tar indexed from the same bytes (BenchmarkIntake)",
		fmt.Sprintf("%.0f MB/s", intakeMB), base, fmt.Sprintf("%.2f× openssl's SHA-256 speed", intakeMB/opensslMB))
	r.add("… HMAC verify while receiving, no index (BenchmarkSpool)", fmt.Sprintf("%.0f MB/s", spoolMB), "", "")
	r.add("… the index alone, from the page cache (BenchmarkIndex)", fmt.Sprintf("%.0f MB/s", indexMB), "", "")
	r.add("HMAC-SHA256 in memory, 16 KiB blocks (BenchmarkHMAC)", fmt.Sprintf("%.0f MB/s", hmacMB), base, fmt.Sprintf("%.2f×", hmacMB/opensslMB))
	one := mbps(testing.Benchmark(BenchmarkSpoolTenants1))
	for _, n := range []struct {
		keys  int
		bench func(*testing.B)
	}{{1, nil}, {4, BenchmarkSpoolTenants4}, {16, BenchmarkSpoolTenants16}} {
		got := one
		if n.bench != nil {
			got = mbps(testing.Benchmark(n.bench))
		}
		r.add(fmt.Sprintf("HMAC verify while spooling with %d tenant keys, none named (BenchmarkSpoolTenants%d)", n.keys, n.keys),
			fmt.Sprintf("%.0f MB/s", got), "1 key "+fmt.Sprintf("%.0f MB/s", one), fmt.Sprintf("%.2f×", got/one))
	}
}

func (r *report) rss(t *testing.T, s *stack, bin string) {
	say("peak RSS while ingesting 64 MiB and 1 GiB")
	rss := s.peakRSS(t, bin)
	r.add("build-fn peak RSS (VmHWM) ingesting a 64 MiB context", mib(rss.peak[0]), fmt.Sprintf("idle %s", mib(rss.idle)),
		fmt.Sprintf("request %s", secs(rss.took[0])))
	r.add("build-fn peak RSS (VmHWM) ingesting a 1 GiB context", mib(rss.peak[1]), fmt.Sprintf("idle %s", mib(rss.idle)),
		fmt.Sprintf("%.2f× the 64 MiB peak for 16× the bytes; request %s", float64(rss.peak[1])/float64(rss.peak[0]), secs(rss.took[1])))
}

func (r *report) capacity(t *testing.T, s *stack, bin string) {
	say("429 at capacity")
	for _, c := range s.atCapacity(t, bin) {
		r.add(fmt.Sprintf("Time to answer 429 at capacity, %d requests, %s", len(c.lat), c.how),
			fmt.Sprintf("p50 %s, p99 %s", ms(percentile(c.lat, 50)), ms(percentile(c.lat, 99))), "",
			fmt.Sprintf("max %s; %d of %d were 429", ms(slices.Max(c.lat)), c.n429, len(c.lat)))
	}
	say("queue handoff")
	handoff := queueHandoff(t, 200)
	r.add(fmt.Sprintf("From a build's end to the next queued build's start (max_inflight=1, streaming clients), %d handoffs", len(handoff)),
		fmt.Sprintf("p50 %s, p99 %s", ms(percentile(handoff, 50)), ms(percentile(handoff, 99))), "",
		fmt.Sprintf("max %s; BuildKit replaced by a stand-in, so only build-fn's own work is timed", ms(slices.Max(handoff))))
}

// stack is one registry and one rootless buildkitd with a busybox base.
type stack struct{ *testenv.Stack }

// describe names the daemon: version, mode, snapshotter.
func (s *stack) describe(t *testing.T) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, s.BK.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []string
	mode := "root"
	if s.BK.Rootless {
		mode = "rootless (rootlesskit)"
	}
	if info, err := c.Info(ctx); err == nil {
		v := info.BuildkitVersion
		rev := ""
		if v.Revision != "" {
			rev = " (" + v.Revision + ")"
		}
		out = append(out, fmt.Sprintf("BuildKit: buildkitd %s %s%s, %s, OCI worker, one daemon for both build-fn and buildctl", v.Package, v.Version, rev, mode))
	}
	if ws, err := c.ListWorkers(ctx); err == nil && len(ws) > 0 {
		out = append(out, "BuildKit snapshotter: "+ws[0].Labels["org.mobyproject.buildkit.worker.snapshotter"])
	}
	if v, err := exec.Command(daemon.Find("buildctl"), "--version").Output(); err == nil {
		out = append(out, "buildctl: "+strings.TrimSpace(string(v)))
	}
	out = append(out, "Registry: docker-registry (CNCF distribution) on loopback, plain HTTP, filesystem storage")
	return out
}

// buildctl runs one build of dir with buildctl on the same daemon.
func (s *stack) buildctl(dir, image string) (time.Duration, error) {
	start := time.Now()
	cmd := exec.Command(daemon.Find("buildctl"), "--addr", s.BK.Addr, "build",
		"--progress=plain", "--frontend", "dockerfile.v0",
		"--local", "context="+dir, "--local", "dockerfile="+dir,
		"--output", "type=image,name="+image+",push=true,registry.insecure=true")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("buildctl: %v\n%s", err, tail(out.String(), 3000))
	}
	return time.Since(start), nil
}

// compare times the same build, repeated, through build-fn (the tar of
// the directory signed in a first pass, then made again as it is posted,
// until the final NDJSON line) and
// with buildctl on the same daemon; one untimed run of each first. before,
// when set, changes the directory (untimed) ahead of every run, timed or
// not; side is "fn" or "ctl" so that the two never build the same bytes
// and find each other's results in BuildKit's cache.
// signT is the part of each fnT the client spent signing the tar, before
// its first byte went out (a faas-cli user waits for it too; buildctl
// signs nothing).
// recv is the mean time build-fn spent receiving and verifying each timed
// request (its fnbuilder_request_receive_seconds).
func (s *stack) compare(t *testing.T, fn *fnbProc, spec contextSpec, name string, n int, before func(dir, side string, i int) error) (fnT, ctlT, signT []time.Duration, recv time.Duration) {
	dir := t.TempDir()
	if err := spec.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	fnImage := s.Reg.Addr + "/bench-" + name + ":fn"
	ctlImage := s.Reg.Addr + "/bench-" + name + ":ctl"
	prepare := func(side string, i int) {
		if before != nil {
			if err := before(dir, side, i); err != nil {
				t.Fatal(err)
			}
		}
	}
	var signed time.Duration
	config, err := json.Marshal(map[string]any{"image": fnImage})
	if err != nil {
		t.Fatal(err)
	}
	// As faas-cli does (regular files and directories only).
	gen := func(w io.Writer) error { return testenv.WriteContextTar(w, dir, config) }
	viaFn := func() time.Duration {
		start := time.Now()
		var err error
		if signed, _, err = postSigned(fn.url, fn.key, gen); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	viaCtl := func() time.Duration {
		d, err := s.buildctl(dir, ctlImage)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Interleaved, build-fn first in every other pair, so that the load of
	// a shared machine weighs on both sides alike. build-fn's SharedKey
	// keeps its incremental copy of the context apart from buildctl's, so
	// each side finds its own previous run there.
	prepare("fn", -1)
	viaFn()
	prepare("ctl", -1)
	viaCtl()
	received := fn.receiveSeconds(t)
	for i := range n {
		sides := []func(){
			func() { prepare("fn", i); fnT = append(fnT, viaFn()); signT = append(signT, signed) },
			func() { prepare("ctl", i); ctlT = append(ctlT, viaCtl()) },
		}
		if i%2 == 1 {
			slices.Reverse(sides)
		}
		for _, run := range sides {
			run()
		}
	}
	received = fn.receiveSeconds(t) - received
	return fnT, ctlT, signT, time.Duration(received / float64(n) * float64(time.Second))
}

// noChange rebuilds an unchanged multi-stage function the way faas-cli
// does (go-sdk's MakeTar and BuildWithStream), and the same directory
// with buildctl.
func (s *stack) noChange(t *testing.T, fn *fnbProc, n int) (fnT, ctlT []time.Duration) {
	dir := t.TempDir()
	files := map[string]string{
		"Dockerfile": "FROM " + s.Base + " AS build\n" +
			"WORKDIR /src\n" +
			"COPY . .\n" +
			"RUN mkdir -p /out/function && cp -r function/* /out/function/ && sh build.sh > /out/manifest\n" +
			"FROM " + s.Base + "\n" +
			"COPY --from=build /out /home/app\n" +
			"ENV fprocess=\"sh /home/app/function/handler.sh\"\n" +
			"USER nobody\n" +
			"CMD [\"/bin/sh\", \"/home/app/function/handler.sh\"]\n",
		"build.sh":             "#!/bin/sh\nfind /out -type f | sort | xargs sha256sum\n",
		"function/handler.sh":  "#!/bin/sh\n" + strings.Repeat("echo handled\n", 200),
		"function/lib.sh":      strings.Repeat("f() { echo lib; }\n", 500),
		"function/config.json": `{"name":"bench","replicas":1}`,
		"template.yml":         "language: sh\nfprocess: sh handler.sh\n",
	}
	testenv.WriteFiles(t, dir, files)
	u, err := url.Parse(fn.url)
	if err != nil {
		t.Fatal(err)
	}
	client := builder.NewFunctionBuilder(u, http.DefaultClient, builder.WithHmacAuth(string(fn.key)))
	tarPath := filepath.Join(t.TempDir(), "req.tar")
	image := s.Reg.Addr + "/bench-function:latest"
	viaSDK := func() time.Duration {
		start := time.Now()
		if err := builder.MakeTar(tarPath, dir, &builder.BuildConfig{Image: image}); err != nil {
			t.Fatal(err)
		}
		stream, err := client.BuildWithStream(tarPath)
		if err != nil {
			t.Fatal(err)
		}
		results := testenv.Collect(t, stream)
		if last := results[len(results)-1]; last.Status != builder.BuildSuccess {
			t.Fatalf("go-sdk build: %+v", last)
		}
		return time.Since(start)
	}
	viaCtl := func() time.Duration {
		d, err := s.buildctl(dir, s.Reg.Addr+"/bench-function:ctl")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	viaSDK()
	for range n {
		fnT = append(fnT, viaSDK())
	}
	viaCtl()
	for range n {
		ctlT = append(ctlT, viaCtl())
	}
	return fnT, ctlT
}

type rssResult struct {
	idle int64
	peak [2]int64 // 64 MiB, 1 GiB
	took [2]time.Duration
}

// peakRSS serves build-fn as its own process with limits raised past
// 1 GiB and posts a 64 MiB then a 1 GiB context, each streamed from a
// generator (signed in a first pass, so the client holds neither), and
// reads VmHWM after each (reset before each with clear_refs).
func (s *stack) peakRSS(t *testing.T, bin string) rssResult {
	fn := startFnb(t, bin, map[string]string{
		"buildkit_url": s.BK.Addr, "insecure_registries": s.Reg.Addr,
		"max_request_bytes": strconv.Itoa(3 << 30), "max_context_bytes": strconv.Itoa(2 << 30),
		"max_unverified_bytes": strconv.Itoa(3 << 30),
	})
	// The build ignores the data files: what is measured is the intake.
	dockerfile := "FROM " + s.Base + "\nRUN echo ingested > /ingested\n"
	warmup := contextSpec{Dockerfile: dockerfile}.Tar(s.Reg.Addr + "/bench-rss:warmup")
	if _, err := postBuild(context.Background(), http.DefaultClient, fn.url, bytes.NewReader(warmup), int64(len(warmup)), testenv.Sign(fn.key, warmup)); err != nil {
		t.Fatal(err)
	}
	var res rssResult
	var err error
	if res.idle, err = procStatus(fn.pid, "VmRSS"); err != nil {
		t.Fatal(err)
	}
	for i, spec := range []contextSpec{
		{Dockerfile: dockerfile, Files: 16, FileSize: 4 << 20, Seed: 64},
		{Dockerfile: dockerfile, Files: 256, FileSize: 4 << 20, Seed: 1024},
	} {
		image := fmt.Sprintf("%s/bench-rss:%d", s.Reg.Addr, i)
		gen := func(w io.Writer) error { return spec.WriteTar(w, image, nil) }
		if err := resetPeak(fn.pid); err != nil {
			t.Fatalf("reset VmHWM: %v", err)
		}
		start := time.Now()
		signed, _, err := postSigned(fn.url, fn.key, gen)
		if err != nil {
			t.Fatalf("%s context: %v", size(spec.Size()), err)
		}
		res.took[i] = time.Since(start) - signed
		if res.peak[i], err = procStatus(fn.pid, "VmHWM"); err != nil {
			t.Fatal(err)
		}
		say("  %s context: VmHWM %s, %s", size(spec.Size()), mib(res.peak[i]), secs(res.took[i]))
	}
	return res
}

type capacityResult struct {
	how  string
	lat  []time.Duration
	n429 int
}

// atCapacity holds build-fn's only slot (max_inflight=1) with a slow
// build and times 1000 requests one after another, then 1000 from 8
// concurrent clients; each is a small signed build request.
func (s *stack) atCapacity(t *testing.T, bin string) []capacityResult {
	// No queue: the streaming clients below are refused, as every client
	// of a full builder was before the waiting room.
	fn := startFnb(t, bin, map[string]string{"buildkit_url": s.BK.Addr, "insecure_registries": s.Reg.Addr, "max_inflight": "1", "max_queued": "0"})
	slow := contextSpec{Dockerfile: "FROM " + s.Base + "\nRUN echo hold-" + strconv.FormatInt(time.Now().UnixNano(), 36) + " && sleep 600\n"}.Tar(s.Reg.Addr + "/bench-hold:1")
	ctx, cancel := context.WithCancel(context.Background())
	held := make(chan struct{})
	go func() {
		defer close(held)
		_, _ = postBuild(ctx, http.DefaultClient, fn.url, bytes.NewReader(slow), int64(len(slow)), testenv.Sign(fn.key, slow))
	}()
	defer func() { cancel(); <-held }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(fn.url + "/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow build did not take the slot")
		}
		time.Sleep(20 * time.Millisecond)
	}

	body := contextSpec{Dockerfile: "FROM " + s.Base + "\n"}.Tar(s.Reg.Addr + "/bench-refused:1")
	sig := testenv.Sign(fn.key, body)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	one := func() (time.Duration, int) {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, fn.url+"/build", bytes.NewReader(body))
		req.Header.Set("X-Build-Signature", sig)
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Accept", "application/x-ndjson")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return time.Since(start), testenv.Status(res)
	}
	for range 50 { // warm the connections
		one()
	}
	var out []capacityResult
	seq := capacityResult{how: "one client, sequential"}
	for range 1000 {
		d, code := one()
		seq.lat = append(seq.lat, d)
		if code == http.StatusTooManyRequests {
			seq.n429++
		}
	}
	out = append(out, seq)

	conc := capacityResult{how: "8 concurrent clients"}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 125 {
				d, code := one()
				mu.Lock()
				conc.lat = append(conc.lat, d)
				if code == http.StatusTooManyRequests {
					conc.n429++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return append(out, conc)
}

// opensslSHA256 is `openssl speed -bytes 16384 -seconds 3 sha256` in MB/s.
func opensslSHA256() (float64, error) {
	out, err := exec.Command("openssl", "speed", "-bytes", "16384", "-seconds", "3", "sha256").Output()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "sha256" && strings.HasSuffix(f[1], "k") {
			v, err := strconv.ParseFloat(strings.TrimSuffix(f[1], "k"), 64)
			if err != nil {
				return 0, err
			}
			return v / 1000, nil // 1000s of bytes per second → MB/s
		}
	}
	return 0, fmt.Errorf("no sha256 line in openssl speed output:\n%s", out)
}

// describeMachine is what the figures depend on.
func describeMachine() []string {
	var out []string
	out = append(out, "Date: "+time.Now().UTC().Format("2006-01-02 15:04 MST"))
	if u, err := exec.Command("uname", "-a").Output(); err == nil {
		out = append(out, "uname -a: `"+strings.TrimSpace(string(u))+"`")
	}
	model, flags := "", ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch strings.TrimSpace(k) {
			case "model name":
				if model == "" {
					model = strings.TrimSpace(v)
				}
			case "flags":
				if flags == "" {
					flags = v
				}
			}
		}
	}
	sha := "no"
	if strings.Contains(flags, " sha_ni") {
		sha = "yes"
	}
	out = append(out, fmt.Sprintf("CPU: %s, %d cores (runtime.NumCPU), SHA extensions: %s", model, runtime.NumCPU(), sha))
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				out = append(out, fmt.Sprintf("Memory: %.1f GiB", float64(kb)/(1<<20)))
			}
		}
	}
	if df, err := exec.Command("df", "-T", os.TempDir()).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(df)), "\n")
		if f := strings.Fields(lines[len(lines)-1]); len(f) >= 2 {
			out = append(out, fmt.Sprintf("Work and spool directories: %s (%s on %s)", os.TempDir(), f[1], f[0]))
		}
	}
	out = append(out, "Load average at the start: "+loadAvg()+" (the machine was not otherwise reserved for the run)")
	out = append(out, "Go: "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH)
	if v, err := exec.Command("openssl", "version").Output(); err == nil {
		out = append(out, "OpenSSL: "+strings.TrimSpace(string(v)))
	}
	return out
}

// contextNote checks, on the buildtar of this run, what decides which
// context files BuildKit re-sends: the mtime served for a file must change
// with its bytes (a file with the same path, size and client mtime but
// other bytes) and only with them (the same bytes under a new client mtime).
func contextNote(t *testing.T) string {
	served := func(content string, mtime time.Time) (int64, error) {
		entries := []testenv.TarEntry{testenv.File("context/Dockerfile", "FROM scratch\n"), testenv.File("context/data.txt", content), testenv.File("com.openfaas.docker.config", `{"image":"127.0.0.1:1/x:1"}`)}
		for i := range entries {
			entries[i].Header.ModTime = mtime
		}
		data := testenv.BuildTar(t, entries...)
		req, err := buildtar.Index(context.Background(), bytes.NewReader(data), buildtar.DefaultLimits())
		if err != nil {
			return 0, err
		}
		var got int64
		err = req.Context.Serve(bytes.NewReader(data)).Walk(context.Background(), "data.txt", func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err == nil {
				got = fi.ModTime().UnixNano()
			}
			return err
		})
		return got, err
	}
	t1, t2 := time.Unix(1700000000, 0), time.Unix(1800000000, 0)
	a, errA := served("request-a bytes", t1)
	b, errB := served("request-b bytes", t1)
	c, errC := served("request-a bytes", t2)
	if err := errors.Join(errA, errB, errC); err != nil {
		return "Could not check the mtimes the context is served with: " + err.Error()
	}
	return fmt.Sprintf("The build-fn of this run serves BuildKit the context from the request tar itself, with mtimes derived "+
		"from each file's bytes: other bytes under the same path, size and client mtime are served %s mtime, the same bytes "+
		"under a new client mtime %s mtime. BuildKit re-sends exactly the files whose mtime (or size, mode, link) changed, "+
		"and keeps one incremental copy per SharedKey, which build-fn sets per tenant and image repository.",
		map[bool]string{true: "another", false: "THE SAME"}[a != b], map[bool]string{true: "the same", false: "ANOTHER"}[a == c])
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func (r *report) table() string {
	var b strings.Builder
	b.WriteString("| Figure | fnbuilder | Baseline | Ratio / result |\n|---|---|---|---|\n")
	for _, row := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", row.what, row.fnbuilder, row.baseline, row.result)
	}
	return b.String()
}

func (r *report) document(table string) string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("The output of `make bench` (`bench/`), from one run on one machine. The figures report; no test asserts a\n")
	b.WriteString("timing. Run it again on your own hardware before drawing conclusions from an absolute number: the ratios are\n")
	b.WriteString("what carries over.\n\n")
	b.WriteString("## Machine\n\n")
	for _, m := range r.machine {
		b.WriteString("- " + m + "\n")
	}
	b.WriteString("\n## Results\n\n")
	b.WriteString(table)
	b.WriteString("\n## How each figure is taken\n\n")
	b.WriteString(method)
	if len(r.notes) > 0 {
		b.WriteString("\n## Notes from this run\n\n")
		for _, n := range r.notes {
			b.WriteString("- " + n + "\n")
		}
	}
	if r.previous != "" {
		b.WriteString("\n## The run before, for comparison\n\n")
		b.WriteString("As `make bench` wrote it then, on the code of that time (figures it no longer takes included).\n\n")
		b.WriteString(strings.TrimRight(r.previous, "\n") + "\n")
	}
	return b.String()
}

const method = `- **Rebuilds.** The same build repeated on one buildkitd, pushing to a local registry each time: build-fn
  (` + "`fnb serve build-fn`" + ` as its own process, the template's server) against ` + "`buildctl build --frontend dockerfile.v0\n" +
	`  --local context=DIR --local dockerfile=DIR --output type=image,name=…,push=true,registry.insecure=true` + "`" + `. The
  build-fn time is the client's: sign the request tar of the same directory in a first pass that keeps nothing, then
  make it again as it is sent, POST it with ` + "`Accept: application/x-ndjson`" + ` and read to the final line, so it
  includes everything a faas-cli user waits for (faas-cli writes the tar to a file and reads it again to sign it, then
  reads it into memory to send it, which costs more). Any client can do the same: the signature must be known before
  the first byte, but the tar need not be held. One untimed
  run of each first, then N timed runs of each, interleaved (build-fn first in every other pair) so that the load of a
  shared machine weighs on both alike; the table shows medians. Before every run, timed or
  not, the directory is changed as the row says (untimed): nothing (*identical*: BuildKit re-sends nothing and every
  step is cached), a small ` + "`stamp.txt`" + ` rewritten with new bytes (*one small file changed*: BuildKit re-sends that
  file, ` + "`COPY`" + ` runs again and a new 50 MiB layer is compressed and pushed), or all 50 files rewritten with new random
  bytes (*every file new*: everything is sent, copied, compressed and pushed). build-fn and buildctl never build the same
  bytes, so neither finds the other's results in the cache; build-fn's SharedKey (per image repository) keeps its
  incremental copy of the context apart from buildctl's. Small context: a Dockerfile (` + "`COPY . /src` + `RUN`" + `) and two small
  files. 50 MiB context: 50 files of 1 MiB of random bytes (incompressible), ` + "`COPY . /ctx` + `RUN`" + `. An identical
  rebuild of a large context costs build-fn what buildctl never pays, whatever BuildKit does: the client reads and signs
  every byte, and build-fn receives and verifies every byte (HMAC-SHA256 both times, about 30 ms per 50 MiB each at
  this machine's 1.7 GB/s) before BuildKit is asked for anything; BuildKit then transfers nothing. The rows below
  it split that rebuild: the client's signing pass; build-fn's receiving, verifying and indexing of the streamed body
  (the mean of its ` + "`fnbuilder_request_receive_seconds`" + ` over the timed runs, which includes waiting for the
  client's second pass); and what is left, BuildKit's build and push, to set beside buildctl's whole run.
- **No-change rebuild.** A two-stage function Dockerfile with a handful of files, unchanged between runs, sent exactly
  as faas-cli sends it: go-sdk's ` + "`builder.MakeTar`" + ` then ` + "`BuildWithStream`" + `, timed from making the tar to the last
  streamed line; buildctl builds the same directory for the baseline.
- **Intake.** ` + "`BenchmarkIntake`" + `: ` + "`signature.Spool`" + ` receiving a 256 MiB request (64 files of 4 MiB random bytes, read from
  the page cache) into a file in the work directory while verifying its HMAC-SHA256, with a ` + "`buildtar.Indexer`" + ` as its tee
  indexing the tar from the same bytes, until the index is done; the per-iteration clean-up is not timed.
  ` + "`BenchmarkSpool`" + ` is the same without the index, ` + "`BenchmarkIndex`" + ` the index alone from the page cache (what a context
  fetched by reference costs after its download). The baseline is ` + "`openssl speed -bytes 16384 -seconds 3 sha256`" + ` (its
  16384-byte column, in MB/s = 10⁶ B/s) on the same machine, and ` + "`BenchmarkHMAC`" + ` is Go's HMAC-SHA256 on the same block
  size. Run them alone with ` + "`go test -run '^$' -bench . ./bench/`" + `.
- **Peak RSS.** ` + "`fnb serve build-fn`" + ` as its own process with ` + "`max_request_bytes`/`max_context_bytes`" + ` raised past 1 GiB. The
  client streams each request from a deterministic generator through a pipe (signed in a first pass over the same
  generator), so it never holds the context. Before each request the process's peak is reset
  (` + "`echo 5 > /proc/PID/clear_refs`" + `); after it ` + "`VmHWM`" + ` is read from ` + "`/proc/PID/status`" + `. The build itself (a ` + "`RUN`" + ` that
  does not read the data) succeeds and pushes; what grows with the context is only the intake.
- **429 at capacity.** build-fn with ` + "`max_inflight=1`" + `, its slot held by a build running ` + "`sleep 600`" + `. Then 1000 signed
  build requests (a few KiB each) one after another on a keep-alive connection, and 1000 more from 8 concurrent
  clients; each is timed from sending to the end of the 429 body. With ` + "`max_queued=0`" + `: these clients stream, and a
  streaming client of a builder with a queue would wait instead; their refusal is the stream's one ` + "`failed`" + ` line
  with ` + "`X-Fnbuilder-Status: 429`" + `.
- **Queue handoff.** build-fn in-process over HTTP with ` + "`max_inflight=1`" + `, BuildKit replaced by a stand-in that starts
  and ends on command: one streaming build runs, a second waits in the queue; the time from the first build's end
  (its runner returning) to the second's start (its runner called) is one handoff. It covers the first build's final
  line, the slot's release and the waiter's wake-up — build-fn's own share of a queued client's wait.
- **The guide's warm rebuild.** The scenario of the Function Builder guide "Introducing Faster Function Builds With a
  Self-Hosted Registry": a registry over HTTPS with a certificate from a private CA and htpasswd authentication
  (buildkitd trusts the CA; build-fn pushes with a ` + "`registry-config`" + ` login), a two-stage function (one stage makes the
  handler, the other carries it beside a watchdog stand-in), and a rebuild after changing only the handler file.
  build-fn's time is the real faas-cli 0.18.12's ` + "`publish --remote-builder`" + `, from start to exit; buildctl builds the
  same directory with the same change and pushes with the same login (` + "`DOCKER_CONFIG`" + `). One untimed run of each, then
  the two alternate, each run with a new handler. The guide reports 0.88 s end to end on its own cluster.
- **Async through the queue.** Needs the local stack up (` + "`make up`" + `, ` + "`cmd/fnb-stack`" + `); the run uses it as it is and
  does not start or stop it. 100 signed build requests (each a Dockerfile with its own ` + "`RUN`" + `, so nothing is cached
  but the base) posted to ` + "`/async-function/build-fn`" + ` with an ` + "`X-Callback-Url`" + ` on loopback: gateway → NATS → two
  queue-workers → build-fn (` + "`max_inflight=2`" + `) → the stack's buildkitd → the stack's registry. Completed: a callback
  with status success; lost: no callback (within 30 minutes, or none for 3 minutes while some were missing);
  duplicated: any callback beyond the first for one ` + "`X-Call-Id`" + `. Wall time runs from the first submission to the last
  first callback, and is divided by 100 builds of the same kind (new tags) run one after another with buildctl on the
  stack's own buildkitd.
- **Cold build on the cluster.** Needs ` + "`make cluster`" + ` up (` + "`FNB_CLUSTER_DIR`" + `); the run uses it as it is. A two-stage
  function: ` + "`go build`" + ` of a small program importing net/http, crypto/tls and encoding/json ` + "`FROM`" + ` the cluster's
  golang stand-in (this machine's Go toolchain as an image layer), the binary copied onto busybox. Published with the
  real faas-cli through build-fn's Service (the production image, two replicas, mutual TLS) to a new repository;
  "fresh replica": the pod of the replica build-fn routes that repository to is deleted just before (its emptyDir cache
  goes with it) and the build starts once the new pod is Ready and its name resolves. Without a registry cache:
  build-fn's ` + "`cache_repo`" + ` unset (` + "`kubectl set env`" + `). With it: ` + "`cache_repo`" + ` set, one build of the repository
  exports its cache, the replica is replaced again, and the same build is timed. Each change of ` + "`cache_repo`" + ` waits until
  build-fn's replaced pod is gone (it serves while it drains); the filling build must show its cache export and the
  timed one its import, or the run fails. faas-cli's run, from start to exit.
`

func median(ds []time.Duration) time.Duration { return percentile(ds, 50) }

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100 // nearest rank
	if i < 1 {
		i = 1
	}
	return s[i-1]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}

func ratio(a, b time.Duration) string {
	return fmt.Sprintf("%.2f×", a.Seconds()/b.Seconds())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
}

func mbps(r testing.BenchmarkResult) float64 {
	if r.T <= 0 {
		return 0
	}
	return float64(r.Bytes) * float64(r.N) / r.T.Seconds() / 1e6
}
