// Command fnb-stack runs fnbuilder's local OpenFaaS stack on one machine,
// with no Docker and no Kubernetes: a registry, NATS Streaming, the
// OpenFaaS CE gateway with basic auth, two queue-workers, Prometheus,
// fnb-provider (functions as containerd containers on the fnb0 bridge) and a
// rootless buildkitd, then the four fnbuilder functions behind the gateway.
//
//	fnb-stack up       start what is not running (idempotent; a second run is fast)
//	fnb-stack restart  stop and start named daemons (buildkitd, queue-worker-1...),
//	                   building and deploying nothing
//	fnb-stack demo     the main job: build examples/hello-secret with a sealed
//	                   secret through /async-function/build-fn, deploy it, invoke it
//	fnb-stack status   what runs, what answers, what is left behind
//	fnb-stack check    whether every tool `up` runs is installed
//	fnb-stack down     stop everything by PID, tear the provider's network down,
//	                   and fail loudly if any process, netns, bridge, iptables
//	                   rule or mount is left
//
// State, logs, PID files and credentials live in the stack directory
// ($FNB_STACK_DIR, default /var/lib/fnbuilder-stack). Needs root.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

const usage = `fnb-stack - fnbuilder's local OpenFaaS stack (see cmd/fnb-stack/README.md)

Usage:
  fnb-stack up      [--dir DIR] [--repo DIR] [--ack-wait 20m]
  fnb-stack restart [--dir DIR] [--ack-wait 20m] DAEMON...   (e.g. buildkitd; builds and deploys nothing)
  fnb-stack demo    [--dir DIR] [--repo DIR] [--example DIR] [--secret-file FILE] [--timeout 10m]
  fnb-stack status  [--dir DIR]
  fnb-stack check                   (are the tools up needs installed?)
  fnb-stack down    [--dir DIR]

DIR defaults to $FNB_STACK_DIR, then /var/lib/fnbuilder-stack. Tools come
from $FNB_TOOLS/bin (default ~/.cache/fnbuilder/bin): run hack/install.sh.
--ack-wait (default $FNB_STACK_ACK_WAIT, then 20m) is the queue-workers'
ack_wait; up restarts them when it changes.
`

type command func(args []string, stdout, stderr io.Writer) error

var commands = map[string]command{
	"up":      upCmd,
	"restart": restartCmd,
	"down":    downCmd,
	"demo":    demoCmd,
	"status":  statusCmd,
	"check":   checkCmd,
	// Internal: the daemons fnb-stack runs from its own binary.
	"forward":  forwardCmd,
	"uts-exec": utsExecCmd,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err := cmd(args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintf(stderr, "\nfnb-stack %s FAILED: %v\n", args[0], err)
		return 1
	}
	return 0
}

// commonFlags are the flags every command shares.
type commonFlags struct {
	dir  string
	repo string
}

func newFlagSet(name string, stderr io.Writer, c *commonFlags, withRepo bool) *flag.FlagSet {
	fs := flag.NewFlagSet("fnb-stack "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.dir, "dir", defaultDir(), "stack directory (env FNB_STACK_DIR)")
	if withRepo {
		fs.StringVar(&c.repo, "repo", "", "fnbuilder checkout (default: found from the working directory)")
	}
	return fs
}

func defaultDir() string {
	if d := strings.TrimSpace(os.Getenv("FNB_STACK_DIR")); d != "" {
		return d
	}
	return "/var/lib/fnbuilder-stack"
}

func parseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return nil
}

func upCmd(args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlagSet("up", stderr, &c, true)
	ackWait := ackWaitFlag(fs)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	d, err := parseAckWait(*ackWait)
	if err != nil {
		return err
	}
	s, err := openStack(c.dir, c.repo, stdout)
	if err != nil {
		return err
	}
	s.AckWait = d
	return s.Up()
}

func restartCmd(args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlagSet("restart", stderr, &c, false)
	ackWait := ackWaitFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	d, err := parseAckWait(*ackWait)
	if err != nil {
		return err
	}
	s, err := openStack(c.dir, "-", stdout)
	if err != nil {
		return err
	}
	s.AckWait = d
	return s.Restart(fs.Args())
}

func ackWaitFlag(fs *flag.FlagSet) *string {
	return fs.String("ack-wait", envOr("FNB_STACK_ACK_WAIT", defaultAckWait.String()),
		"queue-workers' ack_wait: a message still unacknowledged after it is delivered again (env FNB_STACK_ACK_WAIT)")
}

// defaultAckWait is longer than the gateway's upstream_timeout (15m), so a
// build is never delivered twice because it outlived its ack.
const defaultAckWait = 20 * time.Minute

// parseAckWait accepts whole seconds from 1s: NATS Streaming keeps
// ack_wait in seconds and refuses 0.
func parseAckWait(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("--ack-wait / FNB_STACK_ACK_WAIT %q: %v", v, err)
	}
	if d < time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("--ack-wait / FNB_STACK_ACK_WAIT %q: want whole seconds, at least 1s (NATS Streaming keeps it in seconds)", v)
	}
	return d, nil
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

func downCmd(args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlagSet("down", stderr, &c, false)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	s, err := openStack(c.dir, "-", stdout)
	if err != nil {
		return err
	}
	return s.Down()
}

func statusCmd(args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlagSet("status", stderr, &c, false)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	s, err := openStack(c.dir, "-", stdout)
	if err != nil {
		return err
	}
	return s.Status()
}

func checkCmd(args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlagSet("check", stderr, &c, false)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	s, err := openStack(c.dir, "-", stdout)
	if err != nil {
		return err
	}
	if err := s.checkTools(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "every tool fnb-stack up runs is installed (%s, $PATH, Debian packages)\n", s.Tools)
	return nil
}
