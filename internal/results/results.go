// Package results remembers the outcome of each asynchronous build by its
// X-Call-Id. The CE queue-worker delivers a message again when a build
// outlasts ack_wait, and drops a result when the callback receiver is down;
// with this store a redelivery joins the build already running (or gets its
// stored result) instead of building twice, and a lost callback can be
// fetched later. Results are files, so they survive a restart.
package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// Result is what a build answered: the HTTP status and the JSON body.
type Result struct {
	Code int             `json:"code"`
	Body json.RawMessage `json:"body"`
	// Request identifies the request that produced the result (its
	// X-Build-Signature), so a reused call id with another body is caught.
	Request string `json:"request,omitempty"`
	// Transient results (a server-side refusal, a build whose client went
	// away) are shared with deliveries that joined while it ran, but not
	// kept: a later delivery runs again.
	Transient bool `json:"-"`
}

// Store keeps results for TTL under Dir.
type Store struct {
	dir     string
	ttl     time.Duration
	mu      sync.Mutex
	running map[string]*call
}

type call struct {
	done   chan struct{}
	result Result
}

// validID keeps call ids usable as file names; the gateway makes UUIDs.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidID reports whether id can be stored.
func ValidID(id string) bool { return validID.MatchString(id) }

// New opens (creating) a store in dir.
func New(dir string, ttl time.Duration) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("results store: %w", err)
	}
	return &Store{dir: dir, ttl: ttl, running: map[string]*call{}}, nil
}

// Do runs build once per call id. A second Do with the same id while the
// first runs waits for it, or until ctx ends (its client left: err is
// ctx's); after it, gets the stored result. shared says the result came
// from an earlier delivery.
func (s *Store) Do(ctx context.Context, id string, build func() Result) (res Result, shared bool, err error) {
	s.mu.Lock()
	if c, ok := s.running[id]; ok {
		s.mu.Unlock()
		select {
		case <-c.done:
			return c.result, true, nil
		case <-ctx.Done():
			return Result{}, false, ctx.Err()
		}
	}
	if r, ok := s.load(id); ok {
		s.mu.Unlock()
		return r, true, nil
	}
	c := &call{done: make(chan struct{})}
	s.running[id] = c
	s.mu.Unlock()

	defer func() {
		s.mu.Lock()
		delete(s.running, id)
		s.mu.Unlock()
		close(c.done)
	}()
	c.result = build()
	if c.result.Transient {
		return c.result, false, nil
	}
	if err := s.save(id, c.result); err != nil {
		// The build is done and answered; only a later fetch will miss it.
		fmt.Fprintf(os.Stderr, "results: keep %s: %v\n", id, err)
	}
	return c.result, false, nil
}

// Running reports whether a build for id is under way.
func (s *Store) Running(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.running[id]
	return ok
}

// Get returns a stored, unexpired result.
func (s *Store) Get(id string) (Result, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load(id)
}

func (s *Store) path(id string) string { return filepath.Join(s.dir, id+".json") }

func (s *Store) load(id string) (Result, bool) {
	p := s.path(id)
	info, err := os.Stat(p)
	if err != nil {
		return Result{}, false
	}
	if time.Since(info.ModTime()) > s.ttl {
		_ = os.Remove(p)
		return Result{}, false
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return Result{}, false
	}
	var r Result
	if json.Unmarshal(data, &r) != nil {
		return Result{}, false
	}
	return r, true
}

func (s *Store) save(id string, r Result) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), s.path(id))
}

// StartPruning prunes in the background at half the TTL, at least every
// hour and at most every second; see PruneEvery.
func (s *Store) StartPruning() (stop func()) {
	return s.PruneEvery(min(max(s.ttl/2, time.Second), time.Hour))
}

// PruneEvery removes expired results every interval in the background
// until stop is called; stop returns once the pruning goroutine has.
// Expired results are never served (see load): this only frees the disk.
func (s *Store) PruneEvery(interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var pruning sync.WaitGroup
	pruning.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.Prune()
			}
		}
	})
	return sync.OnceFunc(func() {
		close(done)
		pruning.Wait()
	})
}

// Prune removes expired results.
func (s *Store) Prune() {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > s.ttl {
			_ = os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}

// Has reports whether an unexpired result for id is stored.
func (s *Store) Has(id string) bool {
	_, ok := s.Get(id)
	return ok
}
