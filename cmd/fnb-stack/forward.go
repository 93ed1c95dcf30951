package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
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
// prefix cannot give. Each connection goes to the function's current
// address on the bridge, read from the provider's record, so a redeployed
// build-fn is followed. It copies bytes, not HTTP: a streamed answer passes
// as it comes, and nothing of HTTP's can cut it.
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
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() { <-sig; l.Close() }()
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			log.Printf("accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go forwardConn(s, *fn, c)
	}
}

func forwardConn(s *Stack, fn string, c net.Conn) {
	defer c.Close()
	ip, err := s.functionIP(fn)
	if err == nil {
		var up net.Conn
		if up, err = net.DialTimeout("tcp", net.JoinHostPort(ip, "8080"), 5*time.Second); err == nil {
			defer up.Close()
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(up, c)
			go pipe(c, up)
			<-done
			<-done
			return
		}
	}
	log.Printf("%s: %v", fn, err)
	fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n%s does not answer: %v\n", fn, err)
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
