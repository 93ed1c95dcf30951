package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// component is one piece the demo and status check, with how to probe it.
type component struct {
	name  string // daemon (PID file) name
	what  string
	probe func(ctx context.Context) error
}

func (s *Stack) components() []component {
	httpProbe := func(url string) func(ctx context.Context) error {
		return func(ctx context.Context) error { return httpOK(ctx, url, "", "") }
	}
	return []component{
		{"registry", "registry http://" + registryAddr, httpProbe("http://" + registryAddr + "/v2/")},
		{"nats", "NATS Streaming " + natsHost + ":" + natsPort, func(ctx context.Context) error { return tcpOpen(ctx, natsHost+":"+natsPort) }},
		{"prometheus", "Prometheus http://" + prometheusAddr, httpProbe("http://" + prometheusAddr + "/-/ready")},
		{"containerd", "containerd " + s.containerdSocket(), nil},
		{"provider", "fnb-provider http://" + providerAddr, httpProbe("http://" + providerAddr + "/healthz")},
		{"gateway", "gateway " + gatewayURL, httpProbe(gatewayURL + "/healthz")},
		{"buildkitd", "buildkitd " + s.buildkitAddr() + " + tcp://" + buildkitTCPAddr, func(ctx context.Context) error {
			if err := pingBuildkit(ctx, s.buildkitAddr(), nil); err != nil {
				return err
			}
			return pingBuildkit(ctx, "tcp://"+buildkitTCPAddr, s.buildkitTLSOpts())
		}},
		{"queue-worker-1", "queue-worker fnb-qw-1", nil},
		{"queue-worker-2", "queue-worker fnb-qw-2", nil},
		{"builder-forward", "build-fn's root http://" + builderAddr, httpProbe("http://" + builderAddr + "/healthz")},
	}
}

// check probes one component: its process by PID file, then its endpoint.
func (s *Stack) check(ctx context.Context, c component) error {
	r, ok := s.running(c.name)
	if !ok {
		return fmt.Errorf("%s is not running (no live process in %s)", c.what, s.pidPath(c.name))
	}
	if c.probe != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.probe(cctx); err != nil {
			return fmt.Errorf("%s runs (PID %d) but does not answer: %v", c.what, r.PID, err)
		}
	}
	return nil
}

// Status prints what runs and answers, the functions, and leftovers.
func (s *Stack) Status() error {
	ctx := context.Background()
	fmt.Fprintf(s.out, "stack %s\n", s.Dir)
	var bad []string
	up := 0
	for _, c := range s.components() {
		err := s.check(ctx, c)
		state := "ok"
		if err != nil {
			state = "DOWN"
			bad = append(bad, c.name)
		} else {
			up++
		}
		pid := "-"
		if r, ok := s.running(c.name); ok {
			pid = fmt.Sprint(r.PID)
		}
		fmt.Fprintf(s.out, "  %-16s %-5s pid %-8s %s\n", c.name, state, pid, c.what)
		if err != nil && pid != "-" {
			fmt.Fprintf(s.out, "      %v\n      log: %s\n", err, s.logPath(c.name))
		}
	}
	if g, err := s.gateway(); err == nil && s.check(ctx, s.components()[5]) == nil {
		code, body, _, err := g.do(ctx, "GET", "/system/functions", nil, nil)
		if err == nil && code == 200 {
			fmt.Fprintf(s.out, "functions (GET %s/system/functions):%s\n", gatewayURL, summariseFunctions(body))
		}
	}
	if up == 0 {
		left := s.leftovers()
		if len(left) == 0 {
			fmt.Fprintln(s.out, "the stack is down; nothing is left behind")
			return nil
		}
		return fmt.Errorf("the stack is down but left:\n  - %s", strings.Join(left, "\n  - "))
	}
	if len(bad) > 0 {
		return fmt.Errorf("not running or not answering: %s (make up starts what is missing)", strings.Join(bad, ", "))
	}
	return nil
}
