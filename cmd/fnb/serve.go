package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"

	buildfn "github.com/fnbuilder/fnbuilder/build-fn"
	deployfn "github.com/fnbuilder/fnbuilder/deploy-fn"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/fnserver"
	publickeyfn "github.com/fnbuilder/fnbuilder/publickey-fn"
	sealfn "github.com/fnbuilder/fnbuilder/seal-fn"
)

// functions are the handlers `fnb serve` can run, by folder name.
var functions = map[string]http.HandlerFunc{
	"publickey-fn": publickeyfn.Handle,
	"seal-fn":      sealfn.Handle,
	"build-fn":     buildfn.Handle,
	"deploy-fn":    deployfn.Handle,
}

func serve(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8082", "listen address")
	positional, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		return fmt.Errorf("name one function: %s", strings.Join(functionNames(), ", "))
	}
	handle, ok := functions[positional[0]]
	if !ok {
		return fmt.Errorf("unknown function %q, want one of: %s", positional[0], strings.Join(functionNames(), ", "))
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

func functionNames() []string {
	names := make([]string, 0, len(functions))
	for name := range functions {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
