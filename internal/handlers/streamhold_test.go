package handlers

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A streamed answer's first byte goes out no sooner than the hold after
// the request body's end, so that a proxy in front (of-watchdog) has read
// that end itself before its server closes the body (streamhold.go).
func TestStreamHoldsFirstByteAfterTheBody(t *testing.T) {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/build", strings.NewReader("the build context"))
	const hold = 100 * time.Millisecond
	w := holdStream(rec, r, hold)
	if b, err := io.ReadAll(r.Body); err != nil || string(b) != "the build context" {
		t.Fatalf("body through the hold: %q, %v", b, err)
	}
	end := w.(*heldStream).body.at.Load()
	if end == 0 {
		t.Fatal("the body's end was not noted")
	}
	w.WriteHeader(http.StatusOK)
	if held := time.Since(time.Unix(0, end)); held < hold {
		t.Errorf("first byte %s after the body's end, want at least %s", held, hold)
	}
	if _, err := w.Write([]byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		t.Errorf("Flush through the hold: %v", err)
	}
	if rec.Code != http.StatusOK || rec.Body.String() != "{}\n" || !rec.Flushed {
		t.Errorf("answer through the hold: %d %q flushed=%v", rec.Code, rec.Body.String(), rec.Flushed)
	}
}

// Without a proxy in front (a hold of 0) nothing is wrapped or delayed.
func TestStreamHoldZeroLeavesTheAnswerAlone(t *testing.T) {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/build", strings.NewReader("x"))
	body := r.Body
	if w := holdStream(rec, r, 0); w != http.ResponseWriter(rec) || r.Body != body {
		t.Errorf("holdStream with 0 wrapped the writer (%T) or the body", w)
	}
}
