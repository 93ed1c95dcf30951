package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Mask replaces a secret in a log line.
const Mask = "[redacted]"

// Redactor hides secret values in log text. For each value it hides:
//   - the value whole, without the newline a file may end in, and each of
//     its lines of four or more bytes (BuildKit hands over process output
//     line by line, see internal/buildkit);
//   - its base64 in the standard and URL alphabets, padded or not, its
//     lines when wrapped at 64 or 76 columns (openssl, coreutils), and the
//     part that stays the same inside a longer base64 text (a Basic or
//     registry auth "user:value");
//   - its hex in lower and upper case, and its lines when wrapped at 60
//     columns (xxd -p);
//
// each encoding taken of the value with and without a trailing newline.
// A value split across log lines some other way is not recognised: lines
// are redacted one at a time, with no state between them.
//
// All these texts go into one Aho-Corasick automaton, so a line is read
// once whatever the number of secrets, and every byte inside any match is
// masked: overlapping matches never leave part of a secret behind.
type Redactor struct {
	nodes []node
	root  [256]int32 // the root's transitions, dense: it has the most
}

// node is a state of the automaton: a prefix of one or more needles.
type node struct {
	edges []edge
	fail  int32
	// longest is the length of the longest needle that ends in this
	// state, its own or one of its suffixes'; 0 when none does.
	longest int32
}

type edge struct {
	b  byte
	to int32
}

// Derived texts shorter than these would mask ordinary words: a line of a
// value, and an encoded form or one of its wrapped lines.
const (
	minLine    = 4
	minEncoded = 6
)

// NewRedactor builds a redactor for the given secret values.
func NewRedactor(values map[string][]byte) *Redactor {
	r := &Redactor{nodes: []node{{}}}
	seen := map[string]bool{}
	for _, v := range values {
		for _, n := range hiddenForms(v) {
			if len(n) > 0 && !seen[string(n)] {
				seen[string(n)] = true
				r.add(n)
			}
		}
	}
	r.link()
	return r
}

// hiddenForms lists every text that reveals v.
func hiddenForms(v []byte) [][]byte {
	if len(v) == 0 {
		return nil
	}
	forms := [][]byte{v}
	for _, line := range bytes.Split(v, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		if len(line) >= minLine {
			forms = append(forms, line)
		}
	}
	// echo adds a newline, a secret file often has one: encode both.
	trimmed := bytes.TrimRight(v, "\r\n")
	printed := [][]byte{v}
	if len(trimmed) > 0 {
		forms = append(forms, trimmed)
		printed = append(printed, trimmed, append(bytes.Clone(trimmed), '\n'))
	}
	keep := func(texts ...string) {
		for _, t := range texts {
			if len(t) >= minEncoded {
				forms = append(forms, []byte(t))
			}
		}
	}
	for _, p := range printed {
		std := base64.StdEncoding.EncodeToString(p)
		keep(std, base64.RawStdEncoding.EncodeToString(p),
			base64.URLEncoding.EncodeToString(p), base64.RawURLEncoding.EncodeToString(p))
		keep(wrap(std, 64)...)
		keep(wrap(std, 76)...)
		keep(base64Cores(p, base64.RawStdEncoding)...)
		keep(base64Cores(p, base64.RawURLEncoding)...)
		lower := hex.EncodeToString(p)
		keep(lower, strings.ToUpper(lower))
		keep(wrap(lower, 60)...)
	}
	return forms
}

// wrap cuts s into lines of width, as encoders that wrap their output do;
// nil when s fits one line.
func wrap(s string, width int) []string {
	if len(s) <= width {
		return nil
	}
	var lines []string
	for len(s) > width {
		lines = append(lines, s[:width])
		s = s[width:]
	}
	return append(lines, s)
}

// base64Cores returns, for each of the three byte offsets p can have
// inside a longer encoded text, the characters that depend on p's bytes
// alone: the bytes around p change only the characters at its edges.
func base64Cores(p []byte, enc *base64.Encoding) []string {
	var cores []string
	for k := range 3 {
		shifted := append(make([]byte, k), p...)
		s := enc.EncodeToString(shifted)
		first := (8*k + 5) / 6      // the first character without bits of the k bytes before p
		end := 8 * (k + len(p)) / 6 // past the last character without bits of what follows p
		if end-first > 0 && end <= len(s) {
			cores = append(cores, s[first:end])
		}
	}
	return cores
}

func (r *Redactor) add(needle []byte) {
	s := int32(0)
	for _, b := range needle {
		next, ok := r.child(s, b)
		if !ok {
			next = int32(len(r.nodes))
			r.nodes = append(r.nodes, node{})
			r.nodes[s].edges = append(r.nodes[s].edges, edge{b: b, to: next})
		}
		s = next
	}
	r.nodes[s].longest = max(r.nodes[s].longest, int32(len(needle)))
}

func (r *Redactor) child(s int32, b byte) (int32, bool) {
	for _, e := range r.nodes[s].edges {
		if e.b == b {
			return e.to, true
		}
	}
	return 0, false
}

// link sets the failure links breadth first, so that each state's
// shorter suffixes are done before it.
func (r *Redactor) link() {
	var queue []int32
	for _, e := range r.nodes[0].edges {
		r.root[e.b] = e.to
		queue = append(queue, e.to)
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, e := range r.nodes[s].edges {
			f := r.step(r.nodes[s].fail, e.b)
			r.nodes[e.to].fail = f
			r.nodes[e.to].longest = max(r.nodes[e.to].longest, r.nodes[f].longest)
			queue = append(queue, e.to)
		}
	}
}

// step is the state after reading b in state s.
func (r *Redactor) step(s int32, b byte) int32 {
	for s != 0 {
		if next, ok := r.child(s, b); ok {
			return next
		}
		s = r.nodes[s].fail
	}
	return r.root[b]
}

// String returns s with every secret masked.
func (r *Redactor) String(s string) string {
	if r == nil || len(r.nodes) <= 1 {
		return s
	}
	type span struct{ start, end int }
	// Matches arrive by end position; one that reaches back over earlier
	// ones swallows them, so spans stay sorted and disjoint.
	var spans []span
	state := int32(0)
	for i := 0; i < len(s); i++ {
		state = r.step(state, s[i])
		n := int(r.nodes[state].longest)
		if n == 0 {
			continue
		}
		m := span{start: i + 1 - n, end: i + 1}
		for len(spans) > 0 && m.start <= spans[len(spans)-1].end {
			m.start = min(m.start, spans[len(spans)-1].start)
			spans = spans[:len(spans)-1]
		}
		spans = append(spans, m)
	}
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	prev := 0
	for _, m := range spans {
		b.WriteString(s[prev:m.start])
		b.WriteString(Mask)
		prev = m.end
	}
	b.WriteString(s[prev:])
	return b.String()
}

// Clean redacts lines in place and returns them.
func (r *Redactor) Clean(lines []string) []string {
	for i, l := range lines {
		lines[i] = r.String(l)
	}
	return lines
}
