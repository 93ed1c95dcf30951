// Command fnb is fnbuilder's CLI for people and tests: key generation,
// sealing and unsealing build secrets in faas-cli's formats, and serving one
// function locally exactly as the golang-middleware template would.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `fnb - fnbuilder's command line

Usage:
  fnb keygen [-o PATH]
  fnb seal [PUBLIC_KEY_FILE] [--public-key F] (--from-literal k=v | --from-file k=path)... [-o FILE]
  fnb unseal [--private-key F]... [--key NAME] [--json] [FILE]
  fnb serve FUNCTION [--addr HOST:PORT]

FUNCTION is one of: publickey-fn, seal-fn, build-fn, deploy-fn.
`

type command func(args []string, stdout, stderr io.Writer) error

var commands = map[string]command{
	"keygen": keygen,
	"seal":   sealCmd,
	"unseal": unsealCmd,
	"serve":  serve,
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
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	return 0
}

// parse lets flags and positional arguments mix in any order, as cobra
// (and so faas-cli) allows: `fnb seal key.pub --from-literal a=b`.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// repeated collects a flag given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }
