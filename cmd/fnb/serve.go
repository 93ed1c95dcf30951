package main

import (
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/cli"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/fnserver"
	"github.com/fnbuilder/fnbuilder/internal/functions"
)

func serve(args []string, stdout, stderr io.Writer) error {
	fs := cli.Flags("serve", stderr)
	addr := fs.String("addr", "127.0.0.1:8082", "listen address")
	positional, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		return fmt.Errorf("name one function: %s", strings.Join(functions.Names(), ", "))
	}
	handle, err := functions.Lookup(positional[0])
	if err != nil {
		return err
	}
	cfg := config.FromEnv()
	s, err := fnserver.New(*addr, fnserver.WithWatchdogPaths(handle), cfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	// Tests and scripts read this line to learn the port of --addr :0.
	fmt.Fprintf(stdout, "serving %s on http://%s\n", positional[0], l.Addr())
	return fnserver.Run(l, s, cfg)
}
