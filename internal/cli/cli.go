// Package cli is how fnbuilder's commands (fnb, fnb-stack) run their
// subcommands — the first argument names one, and none, -h, --help or help
// prints the usage — and find the checkout they build from.
package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Command runs one subcommand with the arguments after its name.
type Command func(args []string, stdout, stderr io.Writer) error

// Run runs the subcommand args name. It returns the exit code: 2 for the
// usage and flag errors (printed to stderr), 1 when the command fails (its
// error given to failed), 0 otherwise.
func Run(usage string, commands map[string]Command, args []string, stdout, stderr io.Writer, failed func(name string, err error)) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(args[1:], stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		failed(args[0], err)
		return 1
	}
	return 0
}

// Flags is a subcommand's flag set: errors (and -h) go to stderr and come
// back as errors, never as an exit.
func Flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// FindRepo walks up from the working directory to fnbuilder's checkout
// (its go.mod); the error ends with hint.
func FindRepo(hint string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/fnbuilder/fnbuilder\n")) {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no fnbuilder checkout above %s: %s", wd, hint)
		}
	}
}

// EnvOr is the environment variable name, trimmed, or def when it is
// empty.
func EnvOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}
