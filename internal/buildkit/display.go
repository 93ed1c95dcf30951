package buildkit

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"

	"github.com/fnbuilder/fnbuilder/internal/buildlog"
)

// display turns BuildKit's status stream into the log lines of the real
// builder (their text is buildlog's): a line when a step starts, one with
// its duration (or CACHED/ERROR) when it ends, one for each finished
// transfer, and one for each line a step prints.
type display struct {
	format    buildlog.Format
	started   map[digest.Digest]bool
	completed map[digest.Digest]bool
	names     map[digest.Digest]string
	statuses  map[string]bool
	partial   map[digest.Digest]*bytes.Buffer
}

func newDisplay(format buildlog.Format) *display {
	return &display{
		format:    format,
		started:   map[digest.Digest]bool{},
		completed: map[digest.Digest]bool{},
		names:     map[digest.Digest]string{},
		statuses:  map[string]bool{},
		partial:   map[digest.Digest]*bytes.Buffer{},
	}
}

// when is t, or now when BuildKit gave no time.
func when(t *time.Time) time.Time {
	if t == nil {
		return time.Now()
	}
	return *t
}

func (d *display) lines(s *client.SolveStatus) []string {
	var out []string
	// BuildKit may send a step's last output and its completion in one
	// update: that output is taken in at the completion, before its line.
	ending := map[digest.Digest]bool{}
	for _, v := range s.Vertexes {
		if v.Completed != nil && !d.completed[v.Digest] {
			ending[v.Digest] = true
		}
	}
	for _, v := range s.Vertexes {
		d.names[v.Digest] = v.Name
		if v.Started != nil && !d.started[v.Digest] && !v.Cached {
			d.started[v.Digest] = true
			out = append(out, d.format.Step(*v.Started, v.Name))
		}
		if v.Completed == nil || d.completed[v.Digest] {
			continue
		}
		d.completed[v.Digest] = true
		for _, l := range s.Logs {
			if l.Vertex == v.Digest {
				out = append(out, d.log(l)...)
			}
		}
		out = append(out, d.flushVertex(v.Digest)...)
		switch {
		case v.Error != "":
			out = append(out, d.format.StepFailed(*v.Completed, v.Name, v.Error))
		case v.Cached:
			out = append(out, d.format.StepCached(*v.Completed, v.Name))
		case v.Started != nil:
			out = append(out, d.format.StepDone(*v.Completed, v.Name, v.Completed.Sub(*v.Started)))
		}
	}
	for _, st := range s.Statuses {
		if st.Completed == nil || d.statuses[st.ID] {
			continue
		}
		d.statuses[st.ID] = true
		msg := st.ID
		if st.Total > 0 {
			msg += fmt.Sprintf(" %d/%d", st.Current, st.Total)
		}
		out = append(out, d.format.Status(*st.Completed, msg))
	}
	for _, l := range s.Logs {
		if !ending[l.Vertex] {
			out = append(out, d.log(l)...)
		}
	}
	for _, w := range s.Warnings {
		out = append(out, d.format.Warning(time.Now(), string(bytes.TrimSpace(w.Short))))
	}
	return out
}

// log takes in one chunk of a step's output and returns its whole lines.
func (d *display) log(l *client.VertexLog) []string {
	buf := d.partial[l.Vertex]
	if buf == nil {
		buf = &bytes.Buffer{}
		d.partial[l.Vertex] = buf
	}
	buf.Write(l.Data)
	// Whole lines only: a secret split across two chunks would escape
	// redaction if half-lines were sent.
	var out []string
	for {
		i := bytes.IndexByte(buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		text := strings.TrimRight(string(buf.Next(i+1)), "\r\n")
		out = append(out, d.format.Output(l.Timestamp, text))
	}
	return out
}

// flushVertex emits a step's unterminated last output line.
func (d *display) flushVertex(dg digest.Digest) []string {
	buf := d.partial[dg]
	if buf == nil || buf.Len() == 0 {
		return nil
	}
	delete(d.partial, dg)
	return []string{d.format.Output(time.Now(), strings.TrimRight(buf.String(), "\r\n"))}
}

func (d *display) flush() []string {
	var out []string
	for dg := range d.partial {
		out = append(out, d.flushVertex(dg)...)
	}
	return out
}
