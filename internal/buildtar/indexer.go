package buildtar

import (
	"context"
	"errors"
	"io"
)

// Indexer indexes a build tar while it is written to it, so that a request
// body is read once: signature.Spool hands it every byte as it computes the
// MAC (signature.Options.Tee). Write never fails: a bad tar only makes it
// discard the rest, and the verdict waits for Finish, which the caller
// asks for once the MAC holds, so an unsigned body learns nothing of how
// its tar was judged.
type Indexer struct {
	pw   *io.PipeWriter
	done chan struct{}
	req  *Request
	err  error
}

// NewIndexer starts indexing what is written to it, as Index would.
func NewIndexer(ctx context.Context, lim Limits) *Indexer {
	pr, pw := io.Pipe()
	ix := &Indexer{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(ix.done)
		ix.req, ix.err = Index(ctx, pr, lim)
		// Past the end of the archive, or after a refusal, the rest is
		// read and dropped so that Write never waits on nobody.
		_, _ = io.Copy(io.Discard, pr)
	}()
	return ix
}

// Write passes p to the index. It always reports success.
func (ix *Indexer) Write(p []byte) (int, error) {
	_, _ = ix.pw.Write(p)
	return len(p), nil
}

// Finish ends the tar and returns its index, or the reason it has none.
func (ix *Indexer) Finish() (*Request, error) {
	_ = ix.pw.Close()
	<-ix.done
	return ix.req, ix.err
}

var errAbandoned = errors.New("indexing abandoned")

// Abandon stops indexing a body that will not be used, and waits for it.
func (ix *Indexer) Abandon() {
	_ = ix.pw.CloseWithError(errAbandoned)
	<-ix.done
}
