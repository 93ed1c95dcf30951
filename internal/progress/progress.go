// Package progress turns build log lines into the wire protocol's result
// objects: redacted, cut to a safe length, and written as one JSON reply or
// as NDJSON lines that stay far below go-sdk's 64 KiB scanner limit.
package progress

import (
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Status words, exactly as go-sdk and faas-cli spell them ("failed", never
// "failure": faas-cli ignores a final "failure" and exits 0).
const (
	InProgress = "in_progress"
	Success    = "success"
	Failed     = "failed"
)

// Limits that keep every NDJSON line readable by go-sdk's bufio.Scanner
// (64 KiB default buffer): one log line is cut at MaxLineBytes and one
// object carries at most MaxObjectBytes of log text.
const (
	MaxLineBytes   = 4 << 10
	MaxObjectBytes = 32 << 10
)

// Result is one object of the wire protocol.
type Result struct {
	Log   []string `json:"log,omitempty"`
	Image string   `json:"image,omitempty"`
	// Digest is the pushed manifest's digest (sha256:…), in the final
	// line of a build that pushed.
	Digest   string  `json:"digest,omitempty"`
	Status   string  `json:"status"`
	Error    string  `json:"error,omitempty"`
	Duration float64 `json:"duration"`
	// Deploy is set when the request also asked for a deploy.
	Deploy *Deployed `json:"deploy,omitempty"`
}

// Deployed is what a deploy after the build did.
type Deployed struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	// Image is the reference deployed: the image pinned by its digest.
	Image string `json:"image"`
	// Action is "created" or "updated".
	Action string `json:"action"`
}

// Truncate cuts a log line to MaxLineBytes on a UTF-8 boundary.
func Truncate(line string) string {
	if len(line) <= MaxLineBytes {
		return line
	}
	cut := MaxLineBytes - len(" [truncated]")
	for cut > 0 && !utf8Start(line[cut]) {
		cut--
	}
	return line[:cut] + " [truncated]"
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// Flusher pushes buffered bytes to the client; http.ResponseController
// satisfies it through a small adapter in the handler.
type Flusher interface{ Flush() error }

// NDJSON writes results one per line and flushes after each line. It is
// safe for concurrent use: progress and keep-alives come from different
// goroutines.
type NDJSON struct {
	mu    sync.Mutex
	w     io.Writer
	flush Flusher
	start time.Time
	err   error
}

// NewNDJSON starts a stream whose durations count from start.
func NewNDJSON(w io.Writer, flush Flusher, start time.Time) *NDJSON {
	return &NDJSON{w: w, flush: flush, start: start}
}

// Progress writes lines as in_progress objects, splitting them so that no
// object exceeds MaxObjectBytes. An empty call writes a keep-alive line.
func (n *NDJSON) Progress(lines []string) error {
	for _, batch := range Batches(lines) {
		if err := n.write(Result{Log: batch, Status: InProgress}); err != nil {
			return err
		}
	}
	return nil
}

// Final writes the closing object; the caller then ends the response.
func (n *NDJSON) Final(r Result) error {
	// Log lines that do not fit one object go first as progress lines, so
	// none is lost and the final line stays under the limit.
	batches := Batches(r.Log)
	last := len(batches) - 1
	for _, batch := range batches[:last] {
		if err := n.write(Result{Log: batch, Status: InProgress}); err != nil {
			return err
		}
	}
	r.Log = batches[last]
	return n.write(r)
}

func (n *NDJSON) write(r Result) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err != nil {
		return n.err
	}
	r.Duration = Since(n.start)
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := n.w.Write(append(line, '\n')); err != nil {
		n.err = err
		return err
	}
	if n.flush != nil {
		n.err = n.flush.Flush()
	}
	return n.err
}

// Batches groups lines so that each group's JSON-encoded text stays under
// MaxObjectBytes. It always returns at least one (possibly empty) group.
func Batches(lines []string) [][]string {
	batches := [][]string{nil}
	size := 0
	for _, l := range lines {
		l = Truncate(l)
		cost := jsonLen(l) + 1 // quotes, escapes and the separating comma
		if size+cost > MaxObjectBytes && size > 0 {
			batches = append(batches, nil)
			size = 0
		}
		last := len(batches) - 1
		batches[last] = append(batches[last], l)
		size += cost
	}
	return batches
}

// jsonLen is an upper bound of s's length once encoding/json has quoted and
// escaped it: control bytes, <, >, & and invalid UTF-8 become six-byte
// \u escapes, so raw length can be a sixth of the line on the wire.
func jsonLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\' || b == '\n' || b == '\r' || b == '\t':
				n += 2
			case b < 0x20 || b == '<' || b == '>' || b == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += size
		}
		i += size
	}
	return n + 2
}

// Since is seconds since start with millisecond precision, the wire
// protocol's duration.
func Since(start time.Time) float64 {
	return float64(time.Since(start).Milliseconds()) / 1000
}

// Log keeps the whole build log for a buffered reply, within a memory
// budget: past maxBytes it keeps the first lines and counts the rest.
type Log struct {
	mu       sync.Mutex
	lines    []string
	size     int
	maxBytes int
	dropped  int
}

// NewLog makes a log that holds at most maxBytes of text.
func NewLog(maxBytes int) *Log { return &Log{maxBytes: maxBytes} }

// Add appends lines.
func (l *Log) Add(lines []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range lines {
		if l.size+len(line) > l.maxBytes {
			l.dropped++
			continue
		}
		l.lines = append(l.lines, line)
		l.size += len(line)
	}
}

// Lines returns the kept lines plus a note about dropped ones.
func (l *Log) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]string{}, l.lines...)
	if l.dropped > 0 {
		out = append(out, "[log truncated: "+strconv.Itoa(l.dropped)+" more lines]")
	}
	return out
}
