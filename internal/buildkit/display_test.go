package buildkit

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"

	"github.com/fnbuilder/fnbuilder/internal/buildlog"
)

var t0 = time.Date(2025, 6, 13, 20, 16, 16, 0, time.UTC)

func at(d time.Duration) *time.Time {
	t := t0.Add(d)
	return &t
}

const (
	dgA = digest.Digest("sha256:aaaa")
	dgB = digest.Digest("sha256:bbbb")
	dgC = digest.Digest("sha256:cccc")
)

// lineRE is the shape of every line the real builder prints.
var lineRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ .*$`)

func timeFirst(line string) bool { return lineRE.MatchString(line) }

func checkShape(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range lines {
		if !lineRE.MatchString(l) {
			t.Errorf("line %q does not look like \"<RFC3339> text\"", l)
		}
		if strings.ContainsAny(l, "\n") {
			t.Errorf("line %q contains a newline", l)
		}
	}
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDisplayVertexLifecycle(t *testing.T) {
	d := newDisplay(buildlog.Plain)
	name := "[1/2] FROM docker.io/library/alpine"

	got := d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgA, Name: name, Started: at(0)}}})
	equal(t, got, []string{"2025-06-13T20:16:16Z " + name})

	// The same vertex again, still running: announced only once.
	got = d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgA, Name: name, Started: at(0)}}})
	equal(t, got, nil)

	got = d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgA, Name: name, Started: at(0), Completed: at(1500 * time.Millisecond)}}})
	equal(t, got, []string{"2025-06-13T20:16:17Z " + name + " 1.50s"})
	checkShape(t, got)

	// Updates after completion say nothing new.
	got = d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgA, Name: name, Started: at(0), Completed: at(1500 * time.Millisecond)}}})
	equal(t, got, nil)
}

func TestDisplayStartAndEndInOneUpdate(t *testing.T) {
	d := newDisplay(buildlog.Plain)
	got := d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: dgA, Name: "[internal] load .dockerignore", Started: at(0), Completed: at(100 * time.Millisecond)},
	}})
	equal(t, got, []string{
		"2025-06-13T20:16:16Z [internal] load .dockerignore",
		"2025-06-13T20:16:16Z [internal] load .dockerignore 0.10s",
	})
}

func TestDisplayCachedAndError(t *testing.T) {
	d := newDisplay(buildlog.Plain)
	got := d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: dgA, Name: "[2/3] RUN apk add git", Started: at(0), Completed: at(0), Cached: true},
		{Digest: dgB, Name: "[3/3] RUN make", Started: at(time.Second)},
	}})
	equal(t, got, []string{
		"2025-06-13T20:16:16Z [2/3] RUN apk add git CACHED",
		"2025-06-13T20:16:17Z [3/3] RUN make",
	})

	got = d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: dgB, Name: "[3/3] RUN make", Started: at(time.Second), Completed: at(3 * time.Second),
			Error: `process "/bin/sh -c make" did not complete successfully: exit code: 2`},
	}})
	equal(t, got, []string{
		`2025-06-13T20:16:19Z [3/3] RUN make ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2`,
	})
	checkShape(t, got)
}

func TestDisplayStatusOnceWhenCompleted(t *testing.T) {
	d := newDisplay(buildlog.Plain)
	st := func(cur int64, completed *time.Time) *client.SolveStatus {
		return &client.SolveStatus{Statuses: []*client.VertexStatus{{
			ID: "sha256:1234 layer", Vertex: dgA, Current: cur, Total: 10, Started: at(0), Completed: completed,
		}}}
	}
	equal(t, d.lines(st(1, nil)), nil)
	equal(t, d.lines(st(3, nil)), nil)
	got := d.lines(st(3, at(2*time.Second)))
	equal(t, got, []string{"2025-06-13T20:16:18Z sha256:1234 layer 3/10"})
	checkShape(t, got)
	equal(t, d.lines(st(10, at(3*time.Second))), nil)

	// Without a total there is no fraction.
	got = d.lines(&client.SolveStatus{Statuses: []*client.VertexStatus{{ID: "resolve", Completed: at(0)}}})
	equal(t, got, []string{"2025-06-13T20:16:16Z resolve"})
}

func TestDisplayLogsWholeLinesOnly(t *testing.T) {
	d := newDisplay(buildlog.Plain)
	d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgA, Name: "RUN x", Started: at(0)}}})

	log := func(data string, ts time.Duration) *client.SolveStatus {
		return &client.SolveStatus{Logs: []*client.VertexLog{{Vertex: dgA, Data: []byte(data), Timestamp: t0.Add(ts)}}}
	}
	// Half a line: nothing yet, so a secret cut in two is never sent in halves.
	equal(t, d.lines(log("hello wo", 0)), nil)
	equal(t, d.lines(log("rld\nsecond", time.Second)), []string{"2025-06-13T20:16:17Z hello world"})
	got := d.lines(log(" line\r\nthird\n", 2*time.Second))
	equal(t, got, []string{
		"2025-06-13T20:16:18Z second line",
		"2025-06-13T20:16:18Z third",
	})
	checkShape(t, got)

	// Interleaved vertices keep separate partial lines.
	d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgB, Name: "RUN y", Started: at(0)}}})
	got = d.lines(&client.SolveStatus{Logs: []*client.VertexLog{
		{Vertex: dgA, Data: []byte("a-part"), Timestamp: t0},
		{Vertex: dgB, Data: []byte("b-whole\nb-part"), Timestamp: t0},
		{Vertex: dgA, Data: []byte("-end\n"), Timestamp: t0},
	}})
	equal(t, got, []string{
		"2025-06-13T20:16:16Z b-whole",
		"2025-06-13T20:16:16Z a-part-end",
	})

	// The unterminated "b-part" comes out when its vertex completes, before
	// the completion line.
	got = d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgB, Name: "RUN y", Started: at(0), Completed: at(time.Second)}}})
	if len(got) != 2 || !timeFirst(got[0]) || !strings.HasSuffix(got[0], " b-part") ||
		got[1] != "2025-06-13T20:16:17Z RUN y 1.00s" {
		t.Fatalf("completion of B: %q", got)
	}
	checkShape(t, got)
	// Flushed once only.
	equal(t, d.flush(), nil)
}

func TestDisplayLastLineInTheCompletingUpdate(t *testing.T) {
	// BuildKit batches updates: a step's last output and its completion can
	// arrive in one SolveStatus. The output must still come before the
	// completion line and must not wait for the end of the whole build.
	d := newDisplay(buildlog.Plain)
	d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgA, Name: "RUN x", Started: at(0)}}})
	got := d.lines(&client.SolveStatus{
		Vertexes: []*client.Vertex{{Digest: dgA, Name: "RUN x", Started: at(0), Completed: at(2 * time.Second)}},
		Logs:     []*client.VertexLog{{Vertex: dgA, Data: []byte("done\nno newline"), Timestamp: t0.Add(time.Second)}},
	})
	if len(got) != 3 {
		t.Fatalf("got %q", got)
	}
	if got[0] != "2025-06-13T20:16:17Z done" || !strings.HasSuffix(got[1], " no newline") ||
		got[2] != "2025-06-13T20:16:18Z RUN x 2.00s" {
		t.Fatalf("got %q", got)
	}
	equal(t, d.flush(), nil)
}

func TestDisplayFlushAtEnd(t *testing.T) {
	d := newDisplay(buildlog.Plain)
	d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgC, Name: "RUN z", Started: at(0)}}})
	equal(t, d.lines(&client.SolveStatus{Logs: []*client.VertexLog{{Vertex: dgC, Data: []byte("tail\r"), Timestamp: t0}}}), nil)
	got := d.flush()
	if len(got) != 1 || !timeFirst(got[0]) || !strings.HasSuffix(got[0], " tail") {
		t.Fatalf("flush: %q", got)
	}
	checkShape(t, got)
	equal(t, d.flush(), nil)
}

func TestDisplayWarnings(t *testing.T) {
	d := newDisplay(buildlog.Plain)
	got := d.lines(&client.SolveStatus{Warnings: []*client.VertexWarning{{Vertex: dgA, Short: []byte("  FromAsCasing: 'as' and 'FROM' keywords' casing do not match\n")}}})
	if len(got) != 1 || !timeFirst(got[0]) || !strings.Contains(got[0], "Z WARNING: ") || !strings.HasSuffix(got[0], "casing do not match") {
		t.Fatalf("got %q", got)
	}
	checkShape(t, got)
}

func TestDisplayEachVertexAnnouncedOnce(t *testing.T) {
	d := newDisplay(buildlog.Plain)
	var all []string
	for i := 0; i < 5; i++ {
		all = append(all, d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{
			{Digest: dgA, Name: "A", Started: at(0)},
			{Digest: dgB, Name: "B", Started: at(0)},
		}})...)
	}
	all = append(all, d.lines(&client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: dgA, Name: "A", Started: at(0), Completed: at(time.Second)},
		{Digest: dgB, Name: "B", Started: at(0), Completed: at(time.Second)},
	}})...)
	count := map[string]int{}
	for _, l := range all {
		count[l]++
	}
	for l, n := range count {
		if n != 1 {
			t.Errorf("%q printed %d times", l, n)
		}
	}
	if len(all) != 4 {
		t.Fatalf("got %q, want 2 starts and 2 completions", all)
	}
}
