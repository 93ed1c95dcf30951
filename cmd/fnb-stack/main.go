// Command fnb-stack runs fnbuilder's local OpenFaaS stack on one machine,
// with no Docker and no Kubernetes: a registry, NATS Streaming, the
// OpenFaaS CE gateway with basic auth, two queue-workers, Prometheus,
// fnb-provider (functions as containerd containers on the fnb0 bridge) and a
// rootless buildkitd, then the four fnbuilder functions behind the gateway.
// Its commands are in usage below; README.md says what each does. State,
// logs, PID files and credentials live in the stack directory. Needs root.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/cli"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

const usage = `fnb-stack - fnbuilder's local OpenFaaS stack (see cmd/fnb-stack/README.md)

Usage:
  fnb-stack up      [--dir DIR] [--repo DIR] [--ack-wait 20m] [--plain-http-registry]
                    start what is not running (idempotent; a second run is fast)
  fnb-stack restart [--dir DIR] [--ack-wait 20m] DAEMON...
                    stop and start named daemons (e.g. buildkitd); builds and deploys nothing
  fnb-stack demo    [--dir DIR] [--repo DIR] [--example DIR] [--secret-file FILE] [--timeout 10m]
                    build examples/hello-secret with a sealed secret through
                    /async-function/build-fn, deploy it, invoke it
  fnb-stack status  [--dir DIR]    what runs, what answers, what is left behind
  fnb-stack check                  whether every tool up runs is installed
  fnb-stack down    [--dir DIR]    stop everything and fail loudly if anything is left

DIR defaults to $FNB_STACK_DIR, then /var/lib/fnbuilder-stack. Tools come
from $FNB_TOOLS/bin (default ~/.cache/fnbuilder/bin): run hack/install.sh.
--ack-wait (default $FNB_STACK_ACK_WAIT, then 20m) is the queue-workers'
ack_wait; up restarts them when it changes. The registry serves HTTPS from
the stack's CA with generated users, or plain HTTP with --plain-http-registry
(env FNB_STACK_PLAIN_HTTP_REGISTRY=1); the other commands follow up's choice.
`

// stackCommand is a command on one stack directory: --dir, and --repo,
// --ack-wait, its own flags or daemon names when it takes them.
type stackCommand struct {
	repo, ackWait, names bool
	registryMode         bool // --plain-http-registry
	flags                func(fs *flag.FlagSet)
	run                  func(s *Stack, names []string) error
}

func stackCommands() map[string]stackCommand {
	var demo demoOptions
	return map[string]stackCommand{
		"up":      {repo: true, ackWait: true, registryMode: true, run: func(s *Stack, _ []string) error { return s.Up() }},
		"restart": {ackWait: true, names: true, run: (*Stack).Restart},
		"down":    {run: func(s *Stack, _ []string) error { return s.Down() }},
		"status":  {run: func(s *Stack, _ []string) error { return s.Status() }},
		"check": {repo: true, run: func(s *Stack, _ []string) error {
			if err := s.checkTools(); err != nil {
				return err
			}
			fmt.Fprintf(s.out, "every tool fnb-stack up runs is installed (%s, $PATH, Debian packages)\n", daemon.ToolsDir())
			return nil
		}},
		"demo": {repo: true, flags: demo.flags, run: func(s *Stack, _ []string) error {
			if demo.example == "" {
				demo.example = filepath.Join(s.Repo, "examples", "hello-secret")
			}
			return s.Demo(demo)
		}},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	// Internal: the daemons fnb-stack runs from its own binary.
	commands := map[string]cli.Command{"forward": forwardCmd, "uts-exec": utsExecCmd}
	for name, c := range stackCommands() {
		commands[name] = func(args []string, stdout, stderr io.Writer) error { return c.exec(name, args, stdout, stderr) }
	}
	return cli.Run(usage, commands, args, stdout, stderr, func(name string, err error) {
		fmt.Fprintf(stderr, "\nfnb-stack %s FAILED: %v\n", name, err)
	})
}

func (c stackCommand) exec(name string, args []string, stdout, stderr io.Writer) error {
	fs := cli.Flags("fnb-stack "+name, stderr)
	dir := fs.String("dir", defaultDir(), "stack directory (env FNB_STACK_DIR)")
	repo := "-"
	if c.repo {
		fs.StringVar(&repo, "repo", "", "fnbuilder checkout (default: found from the working directory)")
	}
	ackWait := cli.EnvOr("FNB_STACK_ACK_WAIT", defaultAckWait.String())
	if c.ackWait {
		fs.StringVar(&ackWait, "ack-wait", ackWait, "queue-workers' ack_wait: a message still unacknowledged after it is delivered again (env FNB_STACK_ACK_WAIT)")
	}
	plainHTTP := cli.EnvOr("FNB_STACK_PLAIN_HTTP_REGISTRY", "") == "1"
	if c.registryMode {
		fs.BoolVar(&plainHTTP, "plain-http-registry", plainHTTP, "serve the registry over plain HTTP without users, instead of HTTPS from the stack's CA with htpasswd users (env FNB_STACK_PLAIN_HTTP_REGISTRY=1)")
	}
	if c.flags != nil {
		c.flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 && !c.names {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	s, err := openStack(*dir, repo, stdout)
	if err != nil {
		return err
	}
	if c.ackWait {
		if s.AckWait, err = parseAckWait(ackWait); err != nil {
			return err
		}
	}
	if c.registryMode {
		s.setRegistryMode = map[bool]string{true: "http", false: "https"}[plainHTTP]
	}
	return c.run(s, fs.Args())
}

func defaultDir() string {
	return cli.EnvOr("FNB_STACK_DIR", "/var/lib/fnbuilder-stack")
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
