// Package callback receives the callbacks of OpenFaaS async invocations on
// loopback, as a platform does: the queue-worker POSTs the function's
// answer, with X-Call-Id and X-Function-Status, to the X-Callback-Url that
// came with the request.
package callback

import (
	"io"
	"net"
	"net/http"
	"time"
)

// Callback is one delivery.
type Callback struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

// CallID is the gateway's id of the invocation.
func (c Callback) CallID() string { return c.Header.Get("X-Call-Id") }

// Status is the function's HTTP status.
func (c Callback) Status() string { return c.Header.Get("X-Function-Status") }

// Receiver takes callbacks on a loopback port until Close.
type Receiver struct {
	// URL is what to send as X-Callback-Url.
	URL string
	// C delivers the callbacks in the order they came.
	C   <-chan Callback
	srv *http.Server
}

// Listen starts a receiver on a free loopback port.
func Listen() (*Receiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	got := make(chan Callback, 64)
	r := &Receiver{URL: "http://" + l.Addr().String() + "/callback", C: got}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 64<<20))
		got <- Callback{Header: req.Header.Clone(), Body: body, At: time.Now()}
	})}
	go r.srv.Serve(l)
	return r, nil
}

// Close stops the receiver.
func (r *Receiver) Close() error { return r.srv.Close() }
