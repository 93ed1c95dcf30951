package buildtar

import (
	"context"
	"errors"
	"io"
	"sync"
)

// Indexer indexes a build tar while it is written to it, so that a request
// body is read once: signature.Spool hands it every byte as it computes the
// MAC (signature.Options.Tee). Write never fails: a bad tar only makes it
// discard the rest, and the verdict waits for Finish, which the caller
// asks for once the MAC holds, so an unsigned body learns nothing of how
// its tar was judged. Its goroutine starts with the first byte, so that a
// request refused before its body is read (no signature, say) costs none.
type Indexer struct {
	ctx     context.Context
	lim     Limits
	started sync.Once
	pw      *io.PipeWriter
	done    chan struct{}
	req     *Request
	err     error
}

// NewIndexer indexes what is written to it, as Index would.
func NewIndexer(ctx context.Context, lim Limits) *Indexer {
	return &Indexer{ctx: ctx, lim: lim, done: make(chan struct{})}
}

func (ix *Indexer) start() {
	ix.started.Do(func() {
		pr, pw := io.Pipe()
		ix.pw = pw
		go func() {
			defer close(ix.done)
			ix.req, ix.err = Index(ix.ctx, pr, ix.lim)
			// Past the end of the archive, or after a refusal, the rest is
			// read and dropped so that Write never waits on nobody.
			_, _ = io.Copy(io.Discard, pr)
		}()
	})
}

// Write passes p to the index. It always reports success.
func (ix *Indexer) Write(p []byte) (int, error) {
	ix.start()
	if ix.pw != nil { // nil once abandoned before its first byte
		_, _ = ix.pw.Write(p)
	}
	return len(p), nil
}

// Finish ends the tar and returns its index, or the reason it has none.
func (ix *Indexer) Finish() (*Request, error) {
	ix.start() // an empty body is judged too
	if ix.pw == nil {
		return nil, errAbandoned
	}
	_ = ix.pw.Close()
	<-ix.done
	return ix.req, ix.err
}

var errAbandoned = errors.New("indexing abandoned")

// Abandon stops indexing a body that will not be used, and waits for it.
func (ix *Indexer) Abandon() {
	ix.started.Do(func() { close(ix.done) }) // never started: nothing to stop
	if ix.pw != nil {
		_ = ix.pw.CloseWithError(errAbandoned)
	}
	<-ix.done
}
