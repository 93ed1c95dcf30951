package progress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// maxWireLine is go-sdk's bufio.Scanner limit; a longer line silently ends
// the stream for faas-cli.
const maxWireLine = 64 << 10

func TestTruncate(t *testing.T) {
	exact := strings.Repeat("a", MaxLineBytes)
	if got := Truncate(exact); got != exact {
		t.Errorf("a line of exactly MaxLineBytes was changed (len %d)", len(got))
	}
	if got := Truncate("short"); got != "short" {
		t.Errorf("Truncate(short) = %q", got)
	}

	over := strings.Repeat("b", MaxLineBytes+1)
	got := Truncate(over)
	if len(got) > MaxLineBytes {
		t.Errorf("truncated line is %d bytes, want <= %d", len(got), MaxLineBytes)
	}
	if !strings.HasSuffix(got, " [truncated]") {
		t.Errorf("truncated line does not end with the marker: %q", got[len(got)-20:])
	}
	if !strings.HasPrefix(got, "bbbb") {
		t.Errorf("truncated line lost its start")
	}

	// Every alignment of multi-byte runes against the cut point: the result
	// must stay valid UTF-8 and within the limit.
	for _, r := range []string{"é", "€", "😀"} {
		for pad := 0; pad < 4; pad++ {
			line := strings.Repeat("x", pad) + strings.Repeat(r, MaxLineBytes)
			got := Truncate(line)
			if !utf8.ValidString(got) {
				t.Errorf("rune %q pad %d: result is not valid UTF-8", r, pad)
			}
			if len(got) > MaxLineBytes {
				t.Errorf("rune %q pad %d: %d bytes, want <= %d", r, pad, len(got), MaxLineBytes)
			}
			body := strings.TrimSuffix(got, " [truncated]")
			if body == got {
				t.Errorf("rune %q pad %d: no truncation marker", r, pad)
			}
			if !strings.HasPrefix(line, body) {
				t.Errorf("rune %q pad %d: kept text is not a prefix of the input", r, pad)
			}
			// At most one rune's worth of room is given away at the cut.
			if len(body) < MaxLineBytes-len(" [truncated]")-utf8.UTFMax {
				t.Errorf("rune %q pad %d: cut too much, kept %d bytes", r, pad, len(body))
			}
		}
	}
}

func encodedSize(t *testing.T, batch []string) int {
	t.Helper()
	line, err := json.Marshal(Result{Log: batch, Status: InProgress, Duration: 123456.789})
	if err != nil {
		t.Fatal(err)
	}
	return len(line) + 1
}

func TestBatchesStayUnderScannerLimit(t *testing.T) {
	cases := map[string]string{
		"ascii": strings.Repeat("x", 10<<10),
		// encoding/json writes each of these as a six-byte \u escape, so
		// raw byte counts underestimate the line on the wire.
		"html":          strings.Repeat("<&>", 10<<10/3),
		"control":       strings.Repeat("\x1b[0m\x01", 10<<10/5),
		"invalid utf-8": strings.Repeat("\xff", 10<<10),
	}
	for name, line := range cases {
		t.Run(name, func(t *testing.T) {
			n := 10_000
			if name != "ascii" {
				n = 1_000 // still hundreds of batches; keeps -race fast
			}
			lines := make([]string, n)
			for i := range lines {
				lines[i] = line
			}
			batches := Batches(lines)
			total := 0
			for i, b := range batches {
				if size := encodedSize(t, b); size >= maxWireLine {
					t.Fatalf("batch %d of %d encodes to %d bytes, want < %d", i, len(batches), size, maxWireLine)
				}
				if len(b) == 0 {
					t.Fatalf("batch %d is empty", i)
				}
				total += len(b)
			}
			if total != len(lines) {
				t.Fatalf("batches hold %d lines, want %d", total, len(lines))
			}
		})
	}
}

func TestBatchesOrderAndEmpty(t *testing.T) {
	for _, in := range [][]string{nil, {}} {
		b := Batches(in)
		if len(b) != 1 || len(b[0]) != 0 {
			t.Errorf("Batches(%#v) = %#v, want one empty batch", in, b)
		}
	}

	var lines []string
	for i := 0; i < 5000; i++ {
		lines = append(lines, fmt.Sprintf("line %05d %s", i, strings.Repeat("y", i%300)))
	}
	batches := Batches(lines)
	if len(batches) < 2 {
		t.Fatalf("expected several batches for %d lines, got %d", len(lines), len(batches))
	}
	var flat []string
	for _, b := range batches {
		flat = append(flat, b...)
	}
	if strings.Join(flat, "\n") != strings.Join(lines, "\n") {
		t.Fatal("lines were reordered or changed across batches")
	}

	// Long lines are truncated on the way.
	b := Batches([]string{strings.Repeat("z", 100<<10)})
	if len(b) != 1 || len(b[0]) != 1 || len(b[0][0]) > MaxLineBytes {
		t.Fatalf("a 100 KiB line was not truncated: %d batches", len(b))
	}
}

type countingFlusher struct {
	mu    sync.Mutex
	n     int
	buf   *bytes.Buffer
	lines []int // bytes in buf at each flush
	err   error
}

func (f *countingFlusher) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.buf != nil {
		f.lines = append(f.lines, f.buf.Len())
	}
	return f.err
}

type chunkRecorder struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes [][]byte
}

func (c *chunkRecorder) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return c.buf.Write(p)
}

func TestNDJSONLines(t *testing.T) {
	rec := &chunkRecorder{}
	fl := &countingFlusher{buf: &rec.buf}
	start := time.Now().Add(-time.Second)
	n := NewNDJSON(rec, fl, start)

	if err := n.Progress(nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := n.Progress([]string{"one\ntwo", `quote " and \ backslash`}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := n.Final(Result{Image: "ttl.sh/x:1", Status: Success}); err != nil {
		t.Fatal(err)
	}

	if len(rec.writes) != 3 {
		t.Fatalf("%d writes, want 3", len(rec.writes))
	}
	if fl.n != 3 {
		t.Fatalf("%d flushes, want one per line (3)", fl.n)
	}
	var prev float64 = -1
	var results []Result
	for i, w := range rec.writes {
		if !bytes.HasSuffix(w, []byte("\n")) || bytes.Count(w, []byte("\n")) != 1 {
			t.Fatalf("write %d is not exactly one line: %q", i, w)
		}
		// Each flush happens right after its own line.
		if fl.lines[i] != sumLen(rec.writes[:i+1]) {
			t.Fatalf("flush %d came at byte %d, want %d", i, fl.lines[i], sumLen(rec.writes[:i+1]))
		}
		var r Result
		if err := json.Unmarshal(w, &r); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if r.Duration <= prev {
			t.Fatalf("duration did not increase: %v after %v", r.Duration, prev)
		}
		if r.Duration < 1 {
			t.Fatalf("duration %v does not count from start", r.Duration)
		}
		prev = r.Duration
		results = append(results, r)
	}
	if results[0].Status != "in_progress" || results[1].Status != "in_progress" || results[2].Status != "success" {
		t.Fatalf("statuses: %q %q %q", results[0].Status, results[1].Status, results[2].Status)
	}
	if got := results[1].Log; len(got) != 2 || got[0] != "one\ntwo" {
		t.Fatalf("log round trip: %#v", got)
	}
	if results[2].Image != "ttl.sh/x:1" {
		t.Fatalf("image %q", results[2].Image)
	}
	// The status words are exactly what go-sdk compares against.
	if InProgress != "in_progress" || Success != "success" || Failed != "failed" {
		t.Fatal("status constants changed")
	}
	raw := rec.buf.String()
	if strings.Contains(raw, "failure") {
		t.Fatal(`"failure" on the wire`)
	}
}

func sumLen(ws [][]byte) int {
	n := 0
	for _, w := range ws {
		n += len(w)
	}
	return n
}

func TestNDJSONFailedWord(t *testing.T) {
	var buf bytes.Buffer
	n := NewNDJSON(&buf, nil, time.Now())
	if err := n.Final(Result{Status: Failed, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"status":"failed"`) || !strings.Contains(buf.String(), `"error":"boom"`) {
		t.Fatalf("got %s", buf.String())
	}
}

func TestNDJSONFinalKeepsLineSmall(t *testing.T) {
	var buf bytes.Buffer
	n := NewNDJSON(&buf, nil, time.Now())
	lines := make([]string, 1000)
	for i := range lines {
		lines[i] = strings.Repeat("<", 4000)
	}
	if err := n.Final(Result{Log: lines, Status: Failed, Error: strings.Repeat("e", 4000)}); err != nil {
		t.Fatal(err)
	}
	out := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	got := 0
	for i, line := range out {
		if len(line) >= maxWireLine {
			t.Fatalf("line %d is %d bytes", i, len(line))
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		got += len(r.Log)
		if last := i == len(out)-1; last != (r.Status == Failed) {
			t.Fatalf("line %d has status %q", i, r.Status)
		}
	}
	if got != len(lines) {
		t.Fatalf("%d of %d log lines delivered", got, len(lines))
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("broken pipe")
}

func TestNDJSONStopsAfterWriteError(t *testing.T) {
	w := &failingWriter{}
	fl := &countingFlusher{}
	n := NewNDJSON(w, fl, time.Now())
	if err := n.Progress([]string{"a"}); err == nil {
		t.Fatal("no error from a failing writer")
	}
	if err := n.Progress([]string{"b"}); err == nil {
		t.Fatal("no error on the second write")
	}
	if w.n != 1 || fl.n != 0 {
		t.Fatalf("writes %d flushes %d after an error, want 1 and 0", w.n, fl.n)
	}

	fl = &countingFlusher{err: errors.New("gone")}
	var buf bytes.Buffer
	n = NewNDJSON(&buf, fl, time.Now())
	if err := n.Progress(nil); err == nil {
		t.Fatal("flush error not returned")
	}
	if err := n.Progress(nil); err == nil || fl.n != 1 {
		t.Fatalf("kept writing after a flush error (%d flushes)", fl.n)
	}
}

func TestNDJSONConcurrent(t *testing.T) {
	rec := &chunkRecorder{}
	fl := &countingFlusher{}
	n := NewNDJSON(rec, fl, time.Now())
	const goroutines, perG = 20, 50
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perG; i++ {
				line := fmt.Sprintf("g%02d-%03d %s", g, i, strings.Repeat("x", (g*37+i*11)%2000))
				if err := n.Progress([]string{line}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	seen := map[string]bool{}
	out := rec.buf.Bytes()
	if !bytes.HasSuffix(out, []byte("\n")) {
		t.Fatal("stream does not end with a newline")
	}
	lines := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
	if len(lines) != goroutines*perG {
		t.Fatalf("%d lines, want %d", len(lines), goroutines*perG)
	}
	for i, l := range lines {
		var r Result
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("line %d is not whole JSON: %v", i, err)
		}
		if r.Status != InProgress || len(r.Log) != 1 {
			t.Fatalf("line %d: %+v", i, r)
		}
		seen[strings.SplitN(r.Log[0], " ", 2)[0]] = true
	}
	if len(seen) != goroutines*perG {
		t.Fatalf("%d distinct lines, want %d", len(seen), goroutines*perG)
	}
	if fl.n != goroutines*perG {
		t.Fatalf("%d flushes, want %d", fl.n, goroutines*perG)
	}
}

func TestLog(t *testing.T) {
	l := NewLog(100)
	l.Add([]string{strings.Repeat("a", 40), strings.Repeat("b", 40)})
	l.Add([]string{strings.Repeat("c", 40), strings.Repeat("d", 40), "e"})
	got := l.Lines()
	if len(got) < 3 {
		t.Fatalf("got %q", got)
	}
	kept := got[:len(got)-1]
	size := 0
	for _, s := range kept {
		size += len(s)
	}
	if size > 100 {
		t.Fatalf("kept %d bytes, cap is 100", size)
	}
	if kept[0] != strings.Repeat("a", 40) || kept[1] != strings.Repeat("b", 40) {
		t.Fatalf("first lines not kept in order: %q", kept)
	}
	dropped := 5 - len(kept)
	if want := fmt.Sprintf("[log truncated: %d more lines]", dropped); got[len(got)-1] != want {
		t.Fatalf("note = %q, want %q", got[len(got)-1], want)
	}

	l = NewLog(1 << 20)
	l.Add([]string{"x", "y"})
	if got := l.Lines(); len(got) != 2 || got[1] != "y" {
		t.Fatalf("no note expected: %q", got)
	}
	// Lines returns a copy.
	got = l.Lines()
	got[0] = "changed"
	if l.Lines()[0] != "x" {
		t.Fatal("Lines shares its slice")
	}
}

func TestJSONLenIsAnUpperBound(t *testing.T) {
	for _, s := range []string{"", "plain", `"\`, "\n\r\t\b\f\x00\x1f\x7f", "<>&", "é€😀", "\xff\xfe", "\u2028\u2029", "a\x1b[31mred\x1b[0m"} {
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := jsonLen(s); got < len(enc) {
			t.Errorf("jsonLen(%q) = %d, encoding/json writes %d bytes", s, got, len(enc))
		}
	}
}
