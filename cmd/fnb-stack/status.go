package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// check probes one component: its process by PID file, then its endpoint.
func (s *Stack) check(ctx context.Context, c component) error {
	r, ok := s.running(c.Name)
	if !ok {
		return fmt.Errorf("%s is not running (no live process in %s)", c.What, s.pidPath(c.Name))
	}
	if c.Ready != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.Ready(cctx, 0); err != nil {
			return fmt.Errorf("%s runs (PID %d) but does not answer: %v", c.What, r.PID, err)
		}
	}
	return nil
}

// Status prints what runs and answers, the functions, and leftovers.
func (s *Stack) Status() error {
	ctx := context.Background()
	fmt.Fprintf(s.out, "stack %s\n", s.Dir)
	var bad []string
	for _, c := range append(s.daemons(), s.forwardDaemon()) {
		err := s.check(ctx, c)
		state := "ok"
		if err != nil {
			state = "DOWN"
			bad = append(bad, c.Name)
		}
		pid := "-"
		if r, ok := s.running(c.Name); ok {
			pid = fmt.Sprint(r.PID)
		}
		fmt.Fprintf(s.out, "  %-16s %-5s pid %-8s %s\n", c.Name, state, pid, c.What)
		if err != nil && pid != "-" {
			fmt.Fprintf(s.out, "      %v\n      log: %s\n", err, s.logPath(c.Name))
		}
	}
	if g, err := s.gateway(); err == nil && s.check(ctx, s.gatewayDaemon()) == nil {
		if fns, err := g.GetFunctions(ctx, ""); err == nil {
			fmt.Fprintf(s.out, "functions (GET %s/system/functions):%s\n", gatewayURL, summariseFunctions(fns))
		}
	}
	if len(bad) == len(s.daemons())+1 {
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
