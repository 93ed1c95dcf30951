package buildkit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildlog"
	"github.com/fnbuilder/fnbuilder/internal/imageref"
)

// ErrUnreachable means no replica of a pool answered: a fault of the
// moment (replicas restarting, rolling, their names not yet in DNS), not
// of the build.
var ErrUnreachable = errors.New("no buildkitd is reachable")

// Pool spreads builds over several buildkitd replicas. Each image
// repository goes to the same replica every time (rendezvous hashing), so
// a rebuild finds its layers in that replica's cache; when that replica is
// down the build goes to the next one in the repository's own order, and
// only that replica's repositories move.
type Pool struct {
	builders []*Builder
	// PingTimeout bounds the check that a replica answers.
	PingTimeout time.Duration
}

// NewPool makes a pool of builders.
func NewPool(builders ...*Builder) *Pool {
	return &Pool{builders: builders, PingTimeout: 3 * time.Second}
}

// Order lists the pool's builders for an image, preferred first.
func (p *Pool) Order(image string) []*Builder {
	repo := imageref.Repository(image)
	order := append([]*Builder(nil), p.builders...)
	// A cryptographic hash mixes the address into every bit; FNV, for
	// one, lets the shared suffix decide the order for every repository.
	score := func(b *Builder) uint64 {
		sum := sha256.Sum256([]byte(b.daemon.Address + "\x00" + repo))
		return binary.BigEndian.Uint64(sum[:8])
	}
	sort.SliceStable(order, func(i, j int) bool { return score(order[i]) > score(order[j]) })
	return order
}

// Builders are the pool's replicas.
func (p *Pool) Builders() []*Builder { return p.builders }

// Run builds on the first replica, in the image's order, that answers.
func (p *Pool) Run(ctx context.Context, b Build, logf func([]string)) (string, error) {
	var errs []error
	for _, builder := range p.Order(b.Image) {
		// The connection that answered the ping carries the build.
		pingCtx, cancel := context.WithTimeout(ctx, p.PingTimeout)
		c, err := builder.connect(pingCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			errs = append(errs, err)
			logf([]string{buildlog.From(ctx).Status(time.Now(), builder.Address()+" is not answering, trying the next buildkitd")})
			continue
		}
		if len(p.builders) > 1 {
			logf([]string{buildlog.From(ctx).Status(time.Now(), "building on "+builder.Address())})
		}
		defer c.Close()
		return builder.runOn(ctx, c, b, logf)
	}
	return "", fmt.Errorf("%w: %w", ErrUnreachable, errors.Join(errs...))
}
