// Command handler is the fnbuilder-go template's entry point, the
// golang-middleware main.go for this one-module repository: it serves one
// function folder's Handle on 127.0.0.1:8082, behind of-watchdog (mode=http),
// through internal/fnserver (read/write timeouts, graceful drain).
//
// The function is chosen when the image is built, never at run time:
//
//	go build -ldflags "-X main.function=build-fn" ./template/fnbuilder-go
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/fnserver"
	"github.com/fnbuilder/fnbuilder/internal/functions"
)

// function is the folder name of the function this binary serves, set with
// -ldflags "-X main.function=NAME" (the Dockerfile's FUNCTION build arg).
var function string

// addr is of-watchdog's upstream_url in the Dockerfile.
const addr = "127.0.0.1:8082"

func main() {
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Printf("handler: %v", err)
		os.Exit(1)
	}
}

func run() error {
	handle, err := selected(function)
	if err != nil {
		return err
	}
	cfg := config.FromEnv()
	s, err := fnserver.New(addr, handle, cfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	log.Printf("serving %s on http://%s", function, l.Addr())
	return fnserver.Run(l, s, cfg)
}

// selected refuses to start a binary built for no function, or for one this
// template does not know, naming the valid choices.
func selected(name string) (http.HandlerFunc, error) {
	if name == "" {
		return nil, fmt.Errorf("built without a function: build with -ldflags \"-X main.function=NAME\" (FUNCTION build arg), NAME one of: %s",
			strings.Join(functions.Names(), ", "))
	}
	handle, err := functions.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%w (FUNCTION build arg)", err)
	}
	return handle, nil
}
