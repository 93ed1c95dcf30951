package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/cli"
)

// forwardCmd serves build-fn at the root of a loopback origin: faas-cli
// (>= 0.17.5) keeps only scheme and host:port of --remote-builder and asks
// for /build and /publickey there, which the gateway's /function/build-fn/
// prefix cannot give. Each request goes to the function's current address
// on the bridge, read from the provider's record, so a redeployed build-fn
// is followed; streamed answers are passed on as they come.
func forwardCmd(args []string, stdout, stderr io.Writer) error {
	fs := cli.Flags("fnb-stack forward", stderr)
	dir := fs.String("dir", defaultDir(), "stack directory")
	listen := fs.String("listen", builderAddr, "loopback address to listen on")
	fn := fs.String("function", "build-fn", "function to forward to (port 8080)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := &Stack{Dir: filepath.Clean(*dir), out: stdout, t0: time.Now()}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.SetOutput(stderr)
	log.Printf("forwarding http://%s → %s:8080 (address from %s)", *listen, *fn, filepath.Join(s.providerState(), "functions", *fn+".json"))
	forward := func(w http.ResponseWriter, r *http.Request) {
		ip, err := s.functionIP(*fn)
		if err != nil {
			log.Printf("%s: %v", *fn, err)
			http.Error(w, fmt.Sprintf("%s is not deployed: %v", *fn, err), http.StatusBadGateway)
			return
		}
		target := &url.URL{Scheme: "http", Host: net.JoinHostPort(ip, "8080")}
		proxy := &httputil.ReverseProxy{Transport: httpClient.Transport, FlushInterval: -1,
			Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
		proxy.ServeHTTP(w, r)
	}
	srv := &http.Server{Handler: http.HandlerFunc(forward), ReadHeaderTimeout: 10 * time.Second}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() { <-sig; srv.Close() }()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// utsExecCmd sets the hostname in the new UTS namespace it was started in
// (CLONE_NEWUTS) and replaces itself with the command: queue-worker
// replicas on one host need different hostnames for their NATS client ids.
func utsExecCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		return errors.New("usage: fnb-stack uts-exec HOSTNAME COMMAND [ARGS...]")
	}
	if err := syscall.Sethostname([]byte(args[0])); err != nil {
		return fmt.Errorf("sethostname %s: %w (start it in a new UTS namespace)", args[0], err)
	}
	return syscall.Exec(args[1], args[1:], os.Environ())
}
