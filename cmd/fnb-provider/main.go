// Command fnb-provider is fnbuilder's single-machine OpenFaaS provider: it
// runs function images as containerd containers, one per function, each in
// its own network namespace on the fnb0 bridge, and serves the provider API
// the OpenFaaS gateway calls (see internal/provider).
//
//	fnb-provider [serve] [flags]     serve the provider API (default)
//	fnb-provider teardown [-purge]   remove everything it made on the host
//	fnb-provider containerd          run a private containerd for it
//
// Every flag has an environment fallback; -h lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/fnbuilder/fnbuilder/internal/provider"
	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
)

// Set with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = ""
)

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("fnb-provider: ")
	cmd, args := "serve", os.Args[1:]
	if len(args) > 0 && (args[0] == "serve" || args[0] == "teardown" || args[0] == "containerd") {
		cmd, args = args[0], args[1:]
	}
	o, err := parseOptions(cmd, args)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fnb-provider:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "serve":
		err = serve(ctx, o)
	case "teardown":
		err = provider.Teardown(ctx, o.cfg, o.purge)
	case "containerd":
		err = runContainerd(o)
	}
	if err != nil {
		log.Printf("%s: %v", cmd, err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, o options) error {
	// Start first: it creates the bridge, whose address -listen may name.
	p, err := provider.Start(ctx, o.cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	ls, err := provider.Listen(o.listen, o.port)
	if err != nil {
		return err
	}
	for _, l := range ls {
		log.Printf("serving on http://%s (state %s, containerd %s)", l.Addr(), o.cfg.StateDir, o.cfg.ContainerdSocket)
	}
	return p.Serve(ctx, ls)
}

// runContainerd replaces this process with a containerd that keeps its
// root under the state dir and its state and socket beside the socket path,
// so it shares nothing with a system containerd.
func runContainerd(o options) error {
	root := filepath.Join(o.cfg.StateDir, "containerd")
	stateDir := filepath.Join(filepath.Dir(o.cfg.ContainerdSocket), "state")
	for _, d := range []string{root, stateDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	cfgPath := filepath.Join(root, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(runtime.DaemonConfig(root, stateDir, o.cfg.ContainerdSocket)), 0o600); err != nil {
		return err
	}
	log.Printf("exec %s --config %s", o.containerdBin, cfgPath)
	return syscall.Exec(o.containerdBin, []string{o.containerdBin, "--config", cfgPath}, os.Environ())
}
