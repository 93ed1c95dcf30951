// Command fnb-cluster brings a real single-node Kubernetes up on this
// machine (make cluster) and takes it down again (make cluster-down); see
// internal/cluster and docs/cluster-notes.md.
//
//	fnb-cluster [-dir DIR] up
//	fnb-cluster [-dir DIR] down
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/fnbuilder/fnbuilder/internal/cli"
	"github.com/fnbuilder/fnbuilder/internal/cluster"
)

func main() {
	fs := flag.NewFlagSet("fnb-cluster", flag.ContinueOnError)
	dir := fs.String("dir", cli.EnvOr("FNB_CLUSTER_DIR", "/var/lib/fnbuilder-cluster"), "the cluster's state directory (FNB_CLUSTER_DIR)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: fnb-cluster [-dir DIR] up|down")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil || fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	repo, err := cli.FindRepo("charts/buildkit is needed")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fnb-cluster:", err)
		os.Exit(1)
	}
	c := cluster.Cluster{Dir: *dir, Pause: besideMe("fnb-pause"), Repo: repo}
	switch fs.Arg(0) {
	case "up":
		var url string
		if url, err = c.Up(ctx, os.Stderr); err == nil {
			// One per line, for scripts and e2e/cluster.
			fmt.Printf("Kubeconfig %s\n", c.Kubeconfig("admin"))
			fmt.Printf("build-fn %s\n", url)
			fmt.Printf("Payload secret %s\n", c.PayloadSecret())
			fmt.Printf("Registry %s\n", cluster.RegistryAddr)
		}
	case "down":
		err = c.Down(os.Stderr)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fnb-cluster:", err)
		os.Exit(1)
	}
}

// besideMe is a binary next to this one (make builds both into bin/).
func besideMe(name string) string {
	self, err := os.Executable()
	if err != nil {
		return name
	}
	return filepath.Join(filepath.Dir(self), name)
}
