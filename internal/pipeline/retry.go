package pipeline

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/buildlog"
)

// Backoff is a bounded exponential retry schedule.
type Backoff struct {
	Attempts int           // total tries, at least 1
	First    time.Duration // first wait; doubled each time
	Max      time.Duration // cap of one wait; 0 means no cap
}

// Do runs fn until it succeeds, fails permanently, runs out of attempts or
// ctx ends. Each retry is announced through logf.
func (b Backoff) Do(ctx context.Context, what string, transient func(error) bool, logf func([]string), fn func() error) error {
	wait := b.First
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || attempt >= b.Attempts || !transient(err) || ctx.Err() != nil {
			return err
		}
		logf([]string{buildlog.From(ctx).Status(time.Now(), fmt.Sprintf("%s: transient error, retrying in %s (attempt %d of %d): %v",
			what, wait, attempt+1, b.Attempts, err))})
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
		if b.Max > 0 {
			wait = min(wait, b.Max)
		}
	}
}

// Retrying wraps a Runner and runs a build again after a transient fault
// (BuildKit unreachable or restarting, a registry answering 5xx). A
// build's own failure is final at once: running a broken Dockerfile again
// only wastes the slot.
type Retrying struct {
	Next    Runner
	Backoff Backoff
}

// Run implements Runner.
func (r Retrying) Run(ctx context.Context, b buildkit.Build, logf func([]string)) (digest string, err error) {
	// A registry that does not answer may be restarting: one more try, a
	// moment later. Longer would keep the user waiting on a registry that
	// is simply down, with nothing to say.
	registryDown := 0
	transient := func(err error) bool {
		if registryUnreachable.MatchString(err.Error()) {
			registryDown++
			return registryDown == 1
		}
		return Transient(err)
	}
	err = r.Backoff.Do(ctx, "build", transient, logf, func() error {
		digest, err = r.Next.Run(ctx, b, logf)
		return err
	})
	return digest, err
}

// registry5xx matches how BuildKit reports a registry's server error on
// pull or push ("unexpected status from PUT request to ...: 503 Service
// Unavailable", "... 502 Bad Gateway").
var registry5xx = regexp.MustCompile(`\b50[0-4] [A-Z][A-Za-z ]+`)

// registryUnreachable matches a registry that refused BuildKit's
// connection (a pull's or a push's request).
var registryUnreachable = regexp.MustCompile(`failed to do request: .*connect: connection refused`)

// unreachable matches a daemon or registry that is not listening (yet).
var unreachable = regexp.MustCompile(`connection refused|connection reset by peer|\.sock: connect: no such file or directory|no such file or directory.*\.sock|error reading from server: EOF|transport is closing`)

// Transient says whether a build error may go away on its own.
func Transient(err error) bool {
	if errors.Is(err, buildkit.ErrUnreachable) {
		// Every replica's ping failed, whatever each one's error (a ping
		// that timed out included): they may be rolling.
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable {
		return true
	}
	msg := err.Error()
	return registry5xx.MatchString(msg) || unreachable.MatchString(msg)
}
