// Package fnserver runs a function handler the way the golang-middleware
// template's main.go does: one http.Server, read and write timeouts from
// read_timeout/write_timeout, and a graceful drain on SIGTERM. The template
// in template/ and `fnb serve` both use it, so what runs locally is what
// runs behind the watchdog.
package fnserver

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/config"
)

// DefaultTimeout is the template's default for both timeouts. Handlers that
// stream for longer (build-fn) extend their own write deadline.
const DefaultTimeout = 10 * time.Second

// New builds the server the template would run for h.
func New(addr string, h http.Handler, cfg config.Config) (*http.Server, error) {
	readTimeout, err := cfg.Duration("read_timeout", DefaultTimeout)
	if err != nil {
		return nil, err
	}
	writeTimeout, err := cfg.Duration("write_timeout", DefaultTimeout)
	if err != nil {
		return nil, err
	}
	return &http.Server{
		Addr:           addr,
		Handler:        h,
		ReadTimeout:    readTimeout,
		WriteTimeout:   writeTimeout,
		MaxHeaderBytes: 1 << 20,
	}, nil
}

// Run serves on l until SIGTERM or SIGINT, then waits healthcheck_interval
// (default: the write timeout) for in-flight requests, as the template does.
func Run(l net.Listener, s *http.Server, cfg config.Config) error {
	drain, err := cfg.Duration("healthcheck_interval", s.WriteTimeout)
	if err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)

	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()

	select {
	case err := <-served:
		return err
	case sig := <-stop:
		log.Printf("%s received, draining for up to %s", sig, drain)
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return nil
	}
}

// WithWatchdogPaths answers of-watchdog's reserved /_/health and /_/ready
// in front of h, for images that run the handler without the watchdog
// (the local stack's provider probes /_/health).
func WithWatchdogPaths(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK")) }
	mux.HandleFunc("/_/health", ok)
	mux.HandleFunc("/_/ready", ok)
	mux.Handle("/", h)
	return mux
}
