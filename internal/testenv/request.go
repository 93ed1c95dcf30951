package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/internal/progress"
)

// Post sends body to url with a copy of header; the response body is
// closed in t.Cleanup.
func Post(t *testing.T, url string, body []byte, header http.Header) *http.Response {
	t.Helper()
	return PostContext(t, context.Background(), url, bytes.NewReader(body), header)
}

// PostContext is Post with a context and a streamed body.
func PostContext(t *testing.T, ctx context.Context, url string, body io.Reader, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// ReadNDJSON reads every line of an NDJSON reply with go-sdk's limits in
// mind: each must be valid JSON and under 64 KiB (bufio.Scanner's default).
func ReadNDJSON(t testing.TB, body io.Reader) []progress.Result {
	t.Helper()
	st := follow(body)
	<-st.done
	if st.err != nil {
		t.Fatalf("reading NDJSON (a line that is not JSON, or over 64 KiB?): %v", st.err)
	}
	return st.lines
}

// Collect reads a go-sdk stream to its end. An error in it (a line that is
// not JSON, or over 64 KiB), or no result at all, fails the test.
func Collect(t testing.TB, stream *builder.BuildResultStream) []builder.BuildResult {
	t.Helper()
	var results []builder.BuildResult
	for r, err := range stream.Results() {
		if err != nil {
			t.Fatalf("go-sdk stream: %v", err)
		}
		results = append(results, r)
	}
	if len(results) == 0 {
		t.Fatal("go-sdk stream: no result")
	}
	return results
}

// LogText joins the log lines of results, one a line.
func LogText(results []progress.Result) string {
	var b strings.Builder
	for _, r := range results {
		for _, l := range r.Log {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Status is a build-fn answer's real status: a refusal to a client that
// streams goes out as 200 with the status in X-Fnbuilder-Status.
func Status(res *http.Response) int {
	if v := res.Header.Get("X-Fnbuilder-Status"); v != "" && res.StatusCode == http.StatusOK {
		if code, err := strconv.Atoi(v); err == nil {
			return code
		}
	}
	return res.StatusCode
}

// ErrorBody decodes a refusal's JSON body and returns its message. It fails
// the test unless the body is JSON with status "failed" and a non-empty
// error.
func ErrorBody(t testing.TB, res *http.Response) string {
	t.Helper()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("error reply is not JSON: %v", err)
	}
	if body.Status != progress.Failed || body.Error == "" {
		t.Fatalf("error reply %+v, want status failed and a message", body)
	}
	return body.Error
}

// SyncBuffer is a buffer that a process, a goroutine or the standard
// logger writes while the test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Stream follows an NDJSON reply line by line in the background, so a
// test can act while the build runs (kill a daemon, start another build).
// Its lines are read only once done is closed; its log at any time.
type Stream struct {
	lines []progress.Result
	log   SyncBuffer
	done  chan struct{}
	err   error
}

// Follow starts reading res, which must be a 200 stream.
func Follow(t testing.TB, res *http.Response) *Stream {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d, want a 200 stream: %s", res.StatusCode, b)
	}
	return follow(res.Body)
}

func follow(body io.Reader) *Stream {
	st := &Stream{done: make(chan struct{})}
	go func() {
		defer close(st.done)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			var r progress.Result
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				st.err = fmt.Errorf("line is not JSON: %q: %w", sc.Text(), err)
				return
			}
			st.lines = append(st.lines, r)
			for _, l := range r.Log {
				st.log.Write([]byte(l + "\n"))
			}
		}
		st.err = sc.Err()
	}()
	return st
}

// LogText is the log so far, one line a line.
func (st *Stream) LogText() string { return st.log.String() }

// WaitLog waits (at most 60 s) until the log shows text, e.g. that a step runs.
func (st *Stream) WaitLog(t testing.TB, text string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(st.LogText(), text) {
		select {
		case <-st.done:
			t.Fatalf("the stream ended without log line %q:\n%s", text, st.LogText())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q within 60s; log so far:\n%s", text, st.LogText())
		}
	}
}

// Final waits (at most within) for the stream to end and returns its last
// line, which must be the only one that is not in_progress.
func (st *Stream) Final(t testing.TB, within time.Duration) progress.Result {
	t.Helper()
	select {
	case <-st.done:
	case <-time.After(within):
		t.Fatalf("no final line within %s; log so far:\n%s", within, st.LogText())
	}
	if st.err != nil {
		t.Fatalf("stream: %v\nlog:\n%s", st.err, st.LogText())
	}
	if len(st.lines) == 0 {
		t.Fatal("empty stream")
	}
	for _, l := range st.lines[:len(st.lines)-1] {
		if l.Status != progress.InProgress {
			t.Fatalf("a %q line before the end", l.Status)
		}
	}
	return st.lines[len(st.lines)-1]
}
