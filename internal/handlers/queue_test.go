package handlers_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
)

func withQueue(max, queued int, timeout time.Duration) option {
	return func(o *handlers.BuildOptions) {
		o.Slots = schedule.New(max, queued)
		o.QueueTimeout = timeout
		o.Metrics.WatchQueue(o.Slots)
	}
}

// lineReader reads a stream line by line as it arrives.
type lineReader struct {
	t *testing.T
	r *bufio.Reader
}

func (l lineReader) next() progress.Result {
	l.t.Helper()
	line, err := l.r.ReadBytes('\n')
	if err != nil {
		l.t.Fatalf("stream ended: %v", err)
	}
	return decodeOne(l.t, line)
}

// until reads lines until one's log has text in it.
func (l lineReader) until(text string) progress.Result {
	l.t.Helper()
	for {
		r := l.next()
		if strings.Contains(strings.Join(r.Log, "\n"), text) {
			return r
		}
		if r.Status != progress.InProgress {
			l.t.Fatalf("stream ended with %+v before %q", r, text)
		}
	}
}

// succeeds reads to the final line, which must be a success.
func (l lineReader) succeeds() {
	l.t.Helper()
	r := l.next()
	for r.Status == progress.InProgress {
		r = l.next()
	}
	if r.Status != progress.Success {
		l.t.Fatalf("the waiting build ended %+v", r)
	}
}

// A streaming client that finds every slot taken waits for one, is told
// its place, and builds when a slot frees; a client that does not stream
// still gets 429 at once, and so does a streaming one when even the queue
// is full — as its stream's last line, the status in a header.
func TestQueueWaitsForASlot(t *testing.T) {
	b := newBlocking()
	f := newFixture(t, b.run, withQueue(1, 1, time.Minute))
	body := makeTar(t)
	first := f.do(f.request(nil, http.MethodPost, body, ndjson))
	b.waitStarted(t)

	second := f.do(f.request(nil, http.MethodPost, body, ndjson))
	if second.StatusCode != http.StatusOK {
		t.Fatalf("waiting client got %d", second.StatusCode)
	}
	waiting := lineReader{t, bufio.NewReader(second.Body)}
	line := waiting.until("waiting for a build slot: 1 of 1 in the queue")
	if line.Status != progress.InProgress {
		t.Fatalf("%+v", line)
	}

	res, data := f.post(body, "")
	checkErrorReply(t, res, data, http.StatusTooManyRequests)
	res, data = f.post(body, ndjson)
	e := checkErrorReply(t, res, data, http.StatusTooManyRequests)
	if !strings.Contains(e.Error, "queue is full") || res.Header.Get("Retry-After") == "" {
		t.Fatalf("full queue: %q, Retry-After %q", e.Error, res.Header.Get("Retry-After"))
	}
	if n := f.runner.calls.Load(); n != 1 {
		t.Fatalf("%d builds started", n)
	}

	b.release <- struct{}{} // the first build ends; the second gets its slot
	rest, _ := io.ReadAll(first.Body)
	checkFinal(t, ndjsonLines(t, rest), progress.Success)
	b.waitStarted(t)
	close(b.release)
	waiting.succeeds()
	text := f.metrics()
	for _, want := range []string{`fnbuilder_queue_wait_seconds_count 1`, `fnbuilder_queue_length 0`, `fnbuilder_http_requests_total{code="429"} 2`} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s:\n%s", want, text)
		}
	}
}

// No slot within queue_timeout: the stream ends with a failed line that
// says so, and the place in the queue is given up.
func TestQueueTimeout(t *testing.T) {
	b := newBlocking()
	t.Cleanup(func() { close(b.release) })
	f := newFixture(t, b.run, withQueue(1, 1, 200*time.Millisecond))
	body := makeTar(t)
	f.do(f.request(nil, http.MethodPost, body, ndjson))
	b.waitStarted(t)
	res, data := f.post(body, ndjson)
	final := checkFinal(t, ndjsonLines(t, data), progress.Failed)
	if res.StatusCode != http.StatusOK || !strings.Contains(final.Error, "queue_timeout") {
		t.Fatalf("%d %+v", res.StatusCode, final)
	}
	if q := f.opts.Slots.Queued(); q != 0 {
		t.Fatalf("%d still queued", q)
	}
}

func (f *fixture) metrics() string {
	f.t.Helper()
	res, err := f.srv.Client().Get(f.srv.URL + "/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	text, _ := io.ReadAll(res.Body)
	return string(text)
}

// A client that waits longer than the server's write_timeout still gets
// its whole stream, however its place in the queue moves meanwhile: a
// stream cut before its final line is a success to faas-cli.
func TestQueueOutlivesServerWriteTimeout(t *testing.T) {
	b := newBlocking()
	f := startFixture(t, b.run, func(s *http.Server) { s.WriteTimeout = 300 * time.Millisecond }, withQueue(1, 2, time.Minute))
	body := makeTar(t)
	first := f.do(f.request(nil, http.MethodPost, body, ndjson))
	b.waitStarted(t)
	second := f.do(f.request(nil, http.MethodPost, body, ndjson))
	lineReader{t, bufio.NewReader(second.Body)}.until("1 of 1 in the queue")
	third := f.do(f.request(nil, http.MethodPost, body, ndjson))
	waiting := lineReader{t, bufio.NewReader(third.Body)}
	waiting.until("2 of 2 in the queue")
	time.Sleep(time.Second) // past the server's write timeout
	b.release <- struct{}{} // the second gets the slot; the third moves up
	io.Copy(io.Discard, first.Body)
	b.waitStarted(t)
	waiting.until("1 of 1 in the queue")
	close(b.release)
	io.Copy(io.Discard, second.Body)
	waiting.succeeds()
}
