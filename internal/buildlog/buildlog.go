// Package buildlog owns the text of a build's log lines. By default they
// take the current OpenFaaS Pro builder's form (0.5.3 and later):
// "<RFC3339 time> <step>" when a step starts and "<time> <step> 1.23s" when
// it ends; the older form, with "v: ", "s: ", "l: " and "w: " before the
// time, stays available for anyone who parses it (setting log_format).
package buildlog

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Format is the form of the lines.
type Format int

const (
	// Plain is the Pro builder's current form, without prefixes.
	Plain Format = iota
	// Prefixed is the form before Pro 0.5.3: "v: " for steps, "s: " for
	// statuses, "l: " for a step's output, "w: " for warnings.
	Prefixed
)

// ParseFormat reads the log_format setting: "plain" or "prefixed".
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "plain":
		return Plain, nil
	case "prefixed":
		return Prefixed, nil
	}
	return Plain, fmt.Errorf("setting log_format=%q: want plain or prefixed", s)
}

type key struct{}

// WithFormat makes every line written for ctx take form f; the handler
// that answers a build sets it, the code that writes lines reads it.
func WithFormat(ctx context.Context, f Format) context.Context {
	return context.WithValue(ctx, key{}, f)
}

// From is the form lines for ctx take: Plain unless set.
func From(ctx context.Context) Format {
	f, _ := ctx.Value(key{}).(Format)
	return f
}

func (f Format) line(prefix string, t time.Time, text string) string {
	stamp := t.UTC().Format(time.RFC3339)
	if f == Prefixed {
		return prefix + ": " + stamp + " " + text
	}
	return stamp + " " + text
}

// Step is a step that starts.
func (f Format) Step(t time.Time, name string) string { return f.line("v", t, name) }

// StepDone is a step that ended after d: seconds with two decimals, one
// in the old form.
func (f Format) StepDone(t time.Time, name string, d time.Duration) string {
	if f == Prefixed {
		return f.line("v", t, fmt.Sprintf("%s %.1fs", name, d.Seconds()))
	}
	return f.line("v", t, fmt.Sprintf("%s %.2fs", name, d.Seconds()))
}

// StepCached is a step answered from the cache.
func (f Format) StepCached(t time.Time, name string) string { return f.line("v", t, name+" CACHED") }

// StepFailed is a step that failed.
func (f Format) StepFailed(t time.Time, name, msg string) string {
	return f.line("v", t, name+" ERROR: "+msg)
}

// Status is what the builder itself says: a finished transfer, a retry,
// the replica a build runs on.
func (f Format) Status(t time.Time, msg string) string { return f.line("s", t, msg) }

// Output is a line a step printed.
func (f Format) Output(t time.Time, text string) string { return f.line("l", t, text) }

// Warning is a warning BuildKit gave about the build.
func (f Format) Warning(t time.Time, msg string) string {
	if f == Prefixed {
		return f.line("w", t, msg)
	}
	return f.line("w", t, "WARNING: "+msg)
}
