package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// guideResult is the Function Builder guide's warm rebuild, both ways.
type guideResult struct {
	fn, ctl []time.Duration
}

// guideRebuild is the scenario of the Function Builder guide "Introducing
// Faster Function Builds With a Self-Hosted Registry": a registry over TLS
// with a private CA and authentication, a two-stage function, and a warm
// rebuild after changing only its handler file — published with the real
// faas-cli (FAAS_CLI) to build-fn, and built by buildctl from the same
// directory on the same buildkitd and registry. Each run changes the
// handler; n runs of each, after one untimed run of each.
func guideRebuild(t *testing.T, bin string, n int) guideResult {
	cli := os.Getenv("FAAS_CLI")
	if cli == "" {
		t.Fatal("FAAS_CLI is not set: point it at the real faas-cli 0.18.12 (../shared/tools/faas-cli)")
	}
	reg := testenv.StartSecureRegistry(t)
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{Trust: []*testenv.Registry{reg}})
	base := testenv.PushBusybox(t, bk, reg)

	dir := t.TempDir()
	login := filepath.Join(dir, "docker", "config.json")
	write := func(name, body string) { testenv.WriteFiles(t, dir, map[string]string{name: body}) }
	write("docker/config.json", string(reg.DockerConfig(t, "")))
	fn := startFnb(t, bin, map[string]string{"buildkit_url": bk.Addr, "registry_config_path": login})
	write("payload.txt", string(fn.key))
	write("template/dockerfile/template.yml", "language: dockerfile\nfprocess: cat\n")
	// Two stages, as a golang-middleware function: one builds the handler,
	// the other carries the watchdog and the built handler.
	write("fn/Dockerfile", "FROM "+base+" AS watchdog\nRUN echo watchdog > /fwatchdog\n"+
		"FROM "+base+" AS build\nCOPY handler.sh /src/handler.sh\nRUN cp /src/handler.sh /handler && chmod +x /handler\n"+
		"FROM "+base+"\nCOPY --from=watchdog /fwatchdog /usr/bin/fwatchdog\nCOPY --from=build /handler /home/app/handler\n")
	fnImage := reg.Addr + "/guide/fn:latest"
	ctlImage := reg.Addr + "/guide/ctl:latest"
	write("stack.yaml", "version: 1.0\nprovider:\n  name: openfaas\nfunctions:\n  fn:\n    lang: dockerfile\n    handler: ./fn\n    image: "+fnImage+"\n")

	handler := func(i int) {
		write("fn/handler.sh", fmt.Sprintf("#!/bin/sh\necho handler %d-%d\n", i, time.Now().UnixNano()))
	}
	publish := func() time.Duration {
		start := time.Now()
		cmd := exec.Command(cli, "publish", "-f", "stack.yaml", "--remote-builder", fn.url, "--payload-secret", "payload.txt")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("faas-cli publish: %v\n%s", err, tail(out.String(), 3000))
		}
		return time.Since(start)
	}
	buildctl := func() time.Duration {
		start := time.Now()
		ctx := filepath.Join(dir, "fn")
		cmd := exec.Command(daemon.Find("buildctl"), "--addr", bk.Addr, "build", "--progress=plain", "--frontend", "dockerfile.v0",
			"--local", "context="+ctx, "--local", "dockerfile="+ctx, "--output", "type=image,name="+ctlImage+",push=true")
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Dir(login))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("buildctl: %v\n%s", err, tail(out.String(), 3000))
		}
		return time.Since(start)
	}
	var res guideResult
	handler(0)
	publish()
	buildctl()
	// Alternating: each tool gets the same change, so both rebuild the
	// same steps; BuildKit keys build-fn's context copy apart from
	// buildctl's, so neither empties the other's.
	for i := 1; i <= n; i++ {
		handler(i)
		res.fn = append(res.fn, publish())
		res.ctl = append(res.ctl, buildctl())
	}
	return res
}
