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
	"strings"
	"syscall"

	"github.com/fnbuilder/fnbuilder/internal/cluster"
)

func main() {
	fs := flag.NewFlagSet("fnb-cluster", flag.ContinueOnError)
	dir := fs.String("dir", envOr("FNB_CLUSTER_DIR", "/var/lib/fnbuilder-cluster"), "the cluster's state directory (FNB_CLUSTER_DIR)")
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
	repo, err := findRepo()
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

// findRepo walks up from the working directory to fnbuilder's go.mod.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/fnbuilder/fnbuilder\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside the fnbuilder checkout (charts/buildkit is needed)")
		}
		dir = parent
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

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
