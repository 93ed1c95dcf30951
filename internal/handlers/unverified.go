package handlers

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/budget"
	"github.com/fnbuilder/fnbuilder/internal/reply"
)

// UnverifiedBudget bounds the bytes held, across all requests at once, by
// bodies whose signature has not been checked yet. Anyone can send such a
// body, and it takes work_dir space and a connection until its MAC is
// known, so without a bound unsigned uploads could fill the disk and keep
// signed builds out. Bytes count as they arrive, not as declared: a
// client that declares a huge Content-Length and sends little holds
// little.
type UnverifiedBudget struct{ bytes budget.Bytes }

// NewUnverifiedBudget allows max bytes; 0 or less means unlimited (nil).
func NewUnverifiedBudget(max int64) *UnverifiedBudget {
	if max <= 0 {
		return nil
	}
	return &UnverifiedBudget{bytes: budget.Bytes{Max: max}}
}

// Max is the limit, 0 when unlimited.
func (b *UnverifiedBudget) Max() int64 {
	if b == nil {
		return 0
	}
	return b.bytes.Max
}

// Held is how many bytes unverified bodies hold now.
func (b *UnverifiedBudget) Held() int64 {
	if b == nil {
		return 0
	}
	return b.bytes.Used()
}

// OverBudgetError means a body did not fit in the budget. Alone is true
// when it could never fit, whatever other requests hold.
type OverBudgetError struct {
	Max   int64
	Alone bool
}

func (e *OverBudgetError) Error() string {
	if e.Alone {
		return fmt.Sprintf("request body is over the %d bytes this builder holds before checking a signature", e.Max)
	}
	return fmt.Sprintf("the builder holds %d bytes of unverified uploads already; retry later", e.Max)
}

// admit answers at once, before reading any of the body, when its
// declared length does not fit.
func (b *UnverifiedBudget) admit(w http.ResponseWriter, contentLength int64) bool {
	if b == nil || contentLength <= 0 {
		return true
	}
	var err error
	switch {
	case contentLength > b.bytes.Max:
		err = &OverBudgetError{Max: b.bytes.Max, Alone: true}
	case contentLength > b.bytes.Max-b.bytes.Used():
		err = &OverBudgetError{Max: b.bytes.Max}
	default:
		return true
	}
	refuseUpload(w, err)
	return false
}

// UploadTimeoutError means a body was still arriving at upload_timeout.
type UploadTimeoutError struct{ Limit time.Duration }

func (e *UploadTimeoutError) Error() string {
	return fmt.Sprintf("request body not received within %s", e.Limit)
}

// unverifiedBody is a request body until its MAC is checked: every byte
// it reads takes budget, and a read past the upload deadline says so.
type unverifiedBody struct {
	r       io.Reader
	budget  *UnverifiedBudget
	timeout time.Duration
	n       int64
}

// unverifiedBody gives the body of r UploadTimeout to arrive and takes
// budget for it as it does. The server clears the deadline itself once
// the body is read to its end, so a build is never cut by it.
func (o BuildOptions) unverifiedBody(w http.ResponseWriter, r *http.Request) *unverifiedBody {
	// A request without a body is past its end already: a deadline now
	// would cut the server's watch for the client leaving, and the build.
	if o.UploadTimeout > 0 && r.ContentLength != 0 {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(o.UploadTimeout))
	}
	return &unverifiedBody{r: r.Body, budget: o.Unverified, timeout: o.UploadTimeout}
}

func (b *unverifiedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = &UploadTimeoutError{Limit: b.timeout}
	}
	if b.budget == nil || n == 0 {
		return n, err
	}
	// Bytes read and not taken are dropped with the request: the held
	// count never goes over the budget.
	if !b.budget.bytes.Take(int64(n)) {
		return 0, &OverBudgetError{Max: b.budget.bytes.Max, Alone: b.n+int64(n) > b.budget.bytes.Max}
	}
	b.n += int64(n)
	return n, err
}

// Close gives back what the body took: by then its MAC is checked, or
// the request is refused.
func (b *unverifiedBody) Close() {
	if b.budget != nil {
		b.budget.bytes.Give(b.n)
		b.n = 0
	}
}

// refuseUpload answers an upload that ran out of budget or time; false
// when err is neither.
func refuseUpload(w http.ResponseWriter, err error) bool {
	var over *OverBudgetError
	var late *UploadTimeoutError
	switch {
	case errors.As(err, &over) && over.Alone:
		reply.Error(w, http.StatusRequestEntityTooLarge, over.Error())
	case errors.As(err, &over):
		// 503, not 429: the budget is the whole builder's, and the client
		// asking may not be the one filling it.
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		reply.Error(w, http.StatusServiceUnavailable, over.Error())
	case errors.As(err, &late):
		// The server's write deadline may have passed while the body
		// trickled in; the reply gets a moment of its own.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(10 * time.Second))
		reply.Error(w, http.StatusRequestTimeout, late.Error())
	default:
		return false
	}
	return true
}
