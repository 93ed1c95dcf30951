// Command fnb is fnbuilder's CLI for people and tests: key generation,
// sealing and unsealing build secrets in faas-cli's formats, and serving one
// function locally exactly as the golang-middleware template would.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/cli"
)

const usage = `fnb - fnbuilder's command line

Usage:
  fnb keygen [-o PATH]
  fnb seal [PUBLIC_KEY_FILE] [--public-key F] (--from-literal k=v | --from-file k=path)... [-o FILE]
  fnb unseal [--private-key F]... [--key NAME] [--json] [FILE]
  fnb serve FUNCTION [--addr HOST:PORT]

FUNCTION is one of: publickey-fn, seal-fn, build-fn, deploy-fn.
`

var commands = map[string]cli.Command{
	"keygen": keygen,
	"seal":   sealCmd,
	"unseal": unsealCmd,
	"serve":  serve,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.Run(usage, commands, args, stdout, stderr, func(_ string, err error) { fmt.Fprintln(stderr, "Error:", err) })
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
