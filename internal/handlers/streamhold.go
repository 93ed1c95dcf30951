package handlers

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Why a streamed answer's first byte may wait (BuildOptions.StreamHold):
// of-watchdog (0.11.6, what template/ ships) passes streams (Accept:
// application/x-ndjson) through Go's httputil.ReverseProxy. When the proxy
// writes the first byte of build-fn's answer to the client, Go's server
// drains and closes the client's request body, so that the connection can
// carry the next request. The proxy's transport, which sent that very body
// to build-fn, reads it once more after its last byte to see its end: when
// the close comes first, that read fails, the transport drops its
// connection to build-fn (build-fn sees its client leave and cancels the
// build), and the client's stream ends after its first line. faas-cli and
// go-sdk take a stream without a final line for a success, with nothing
// pushed. Measured on the cluster (docs/cluster-notes.md): about 1 stream
// in 100 with two clients at once. build-fn cannot see that last read;
// answering a moment later lets it happen first. Without a proxy in front
// there is nothing to wait for.

// heldStream delays the first byte of a streamed answer until hold after
// its request body ended. A body never read to its end (a refusal
// before the upload) is not waited for.
type heldStream struct {
	http.ResponseWriter
	body *bodyEnd
	hold time.Duration
	once sync.Once
}

// holdStream wraps w and r's body for a streaming request; a hold of 0
// leaves both as they are.
func holdStream(w http.ResponseWriter, r *http.Request, hold time.Duration) http.ResponseWriter {
	if hold <= 0 {
		return w
	}
	body := &bodyEnd{ReadCloser: r.Body}
	r.Body = body
	return &heldStream{ResponseWriter: w, body: body, hold: hold}
}

func (h *heldStream) wait() {
	h.once.Do(func() {
		if end := h.body.at.Load(); end != 0 {
			time.Sleep(time.Until(time.Unix(0, end).Add(h.hold)))
		}
	})
}

func (h *heldStream) WriteHeader(code int) {
	h.wait()
	h.ResponseWriter.WriteHeader(code)
}

func (h *heldStream) Write(p []byte) (int, error) {
	h.wait()
	return h.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and the deadlines.
func (h *heldStream) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// bodyEnd notes when a request body was read to its end.
type bodyEnd struct {
	io.ReadCloser
	at atomic.Int64 // Unix nanoseconds; 0 until the end
}

func (b *bodyEnd) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.at.CompareAndSwap(0, time.Now().UnixNano())
	}
	return n, err
}
