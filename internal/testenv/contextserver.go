package testenv

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// ContextServer is the host of a context reference: it serves its body at
// any path, except /to?where=URL, which redirects to URL. It listens on
// loopback, as httptest does, and counts the requests it gets.
type ContextServer struct {
	*httptest.Server
	Hits atomic.Int32
}

// ServeContext starts a ContextServer for body; t.Cleanup stops it.
func ServeContext(t testing.TB, body []byte) *ContextServer {
	t.Helper()
	s := &ContextServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Hits.Add(1)
		if r.URL.Path == "/to" {
			http.Redirect(w, r, r.URL.Query().Get("where"), http.StatusFound)
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}
