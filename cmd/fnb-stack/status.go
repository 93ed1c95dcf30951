package main

import (
	"context"
	"fmt"
	"strings"
)

// Status prints what runs and answers, the functions, and leftovers.
func (s *Stack) Status() error {
	ctx := context.Background()
	fmt.Fprintf(s.out, "stack %s\n", s.Dir)
	var bad []string
	for _, c := range append(s.daemons(), s.forwardDaemon()) {
		err := s.group().Check(ctx, c)
		state := "ok"
		if err != nil {
			state = "DOWN"
			bad = append(bad, c.Name)
		}
		pid := "-"
		if r, ok := s.group().Running(c.Name); ok {
			pid = fmt.Sprint(r.PID)
		}
		fmt.Fprintf(s.out, "  %-16s %-5s pid %-8s %s\n", c.Name, state, pid, c.What)
		if err != nil && pid != "-" {
			fmt.Fprintf(s.out, "      %v\n      log: %s\n", err, s.logPath(c.Name))
		}
	}
	if g, err := s.gateway(); err == nil && s.group().Check(ctx, s.gatewayDaemon()) == nil {
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
