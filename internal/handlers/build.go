package handlers

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/build"
	"github.com/fnbuilder/fnbuilder/internal/metrics"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/signature"
)

// BuildOptions configures MakeBuildHandler.
type BuildOptions struct {
	Pipeline *build.Pipeline
	Metrics  *metrics.Metrics
	// PayloadSecret returns the HMAC key file's content (trimmed here).
	PayloadSecret func() ([]byte, error)
	DisableHMAC   bool
	// SpoolDir holds request bodies while their signature is checked.
	SpoolDir     string
	MaxBodyBytes int64
	// Slots bounds concurrent builds; nil means unlimited.
	Slots *Slots
	// Timeout bounds one build, from accepted request to final line.
	Timeout time.Duration
	// KeepAlive is the interval of empty progress lines while a stream is
	// quiet, so that proxies do not close an idle connection.
	KeepAlive time.Duration
}

// MakeBuildHandler answers POST /build: verify, unpack, build, reply.
func MakeBuildHandler(o BuildOptions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cw := &codeWriter{ResponseWriter: w}
		defer func() { o.Metrics.CountRequest(cw.code) }()
		serveBuild(cw, r, o)
	}
}

func serveBuild(w http.ResponseWriter, r *http.Request, o BuildOptions) {
	if r.Method != http.MethodPost {
		reply.MethodNotAllowed(w, "POST")
		return
	}
	if !o.Slots.TryAcquire() {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		reply.Error(w, http.StatusTooManyRequests,
			fmt.Sprintf("Concurrent request limit exceeded. Max concurrent requests: %d", o.Slots.Max()))
		return
	}
	defer o.Slots.Release()
	start := time.Now()

	if o.MaxBodyBytes > 0 && r.ContentLength > o.MaxBodyBytes {
		reply.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is over the limit of %d bytes", r.ContentLength, o.MaxBodyBytes))
		return
	}
	key, err := o.hmacKey()
	if err != nil {
		log.Printf("build: %v", err)
		reply.Error(w, http.StatusInternalServerError, "the builder's payload secret is not usable")
		return
	}
	body := &countingReader{r: r.Body}
	var spooled *signature.Spooled
	if o.DisableHMAC {
		spooled, err = signature.SpoolUnverified(body, o.SpoolDir, o.MaxBodyBytes)
	} else {
		spooled, err = signature.Spool(body, r.Header.Get("X-Build-Signature"), key, o.SpoolDir, o.MaxBodyBytes)
	}
	o.Metrics.BytesReceived.Add(float64(body.n))
	if err != nil {
		code, msg := spoolStatus(err)
		reply.Error(w, code, msg)
		return
	}
	job, err := o.Pipeline.Prepare(spooled.Reader())
	spooled.Close()
	if err != nil {
		var in *build.InputError
		switch {
		case errors.As(err, &in) && in.TooLarge:
			reply.Error(w, http.StatusRequestEntityTooLarge, err.Error())
		case errors.As(err, &in):
			reply.Error(w, http.StatusBadRequest, err.Error())
		default:
			log.Printf("build: %v", err)
			reply.Error(w, http.StatusInternalServerError, err.Error())
		}
		return
	}
	defer job.Close()

	ctx, cancel := context.WithTimeout(r.Context(), o.Timeout)
	defer cancel()
	// The template's server cuts any reply at write_timeout (10 s by
	// default); a build may take far longer, so this reply gets its own.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(o.Timeout + time.Minute))

	o.Metrics.Inflight.Inc()
	defer o.Metrics.Inflight.Dec()
	var result progress.Result
	if wantsNDJSON(r) {
		result = stream(ctx, w, job, start, o.KeepAlive)
	} else {
		result = buffered(ctx, w, job, start)
	}
	o.Metrics.BuildDuration.WithLabelValues(result.Status).Observe(time.Since(start).Seconds())
}

// retryAfterSeconds is what a client at capacity is told to wait.
const retryAfterSeconds = 5

func (o BuildOptions) hmacKey() ([]byte, error) {
	if o.DisableHMAC {
		return nil, nil
	}
	data, err := o.PayloadSecret()
	if err != nil {
		return nil, err
	}
	key := signature.Key(data)
	if len(key) == 0 {
		return nil, errors.New("the payload secret is empty")
	}
	return key, nil
}

func spoolStatus(err error) (int, string) {
	var tooLarge *signature.TooLargeError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, signature.ErrMissing):
		return http.StatusUnauthorized, "missing X-Build-Signature header"
	case errors.Is(err, signature.ErrMalformed):
		return http.StatusUnauthorized, "malformed X-Build-Signature header, want sha256=<hex>"
	case errors.Is(err, signature.ErrMismatch):
		return http.StatusUnauthorized, "X-Build-Signature does not match the request body"
	}
	return http.StatusBadRequest, "read request body: " + err.Error()
}

func wantsNDJSON(r *http.Request) bool {
	return strings.Contains(strings.ToLower(r.Header.Get("Accept")), "application/x-ndjson")
}

// stream answers 200 at once and then one NDJSON line per batch of log
// lines; failures after this point can only be a final "failed" line.
func stream(ctx context.Context, w http.ResponseWriter, job *build.Job, start time.Time, keepAlive time.Duration) progress.Result {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := progress.NewNDJSON(w, http.NewResponseController(w), start)
	_ = out.Progress(nil)

	// The keep-alive goroutine is stopped and waited for before the final
	// line: nothing may follow it, nor touch w once the handler returns.
	stop := make(chan struct{})
	var keepAlives sync.WaitGroup
	if keepAlive > 0 {
		keepAlives.Go(func() {
			t := time.NewTicker(keepAlive)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					_ = out.Progress(nil)
				}
			}
		})
	}
	err := job.Run(ctx, func(lines []string) { _ = out.Progress(lines) })
	close(stop)
	keepAlives.Wait()
	result := finalResult(job, err, nil)
	_ = out.Final(result)
	return result
}

// buffered answers one JSON object after the build: 200 on success, 500
// with the same object on failure (old clients read the body on any code).
func buffered(ctx context.Context, w http.ResponseWriter, job *build.Job, start time.Time) progress.Result {
	collected := progress.NewLog(maxBufferedLog)
	err := job.Run(ctx, collected.Add)
	result := finalResult(job, err, collected.Lines())
	result.Duration = progress.Since(start)
	code := http.StatusOK
	if err != nil {
		code = http.StatusInternalServerError
	}
	reply.JSON(w, code, result)
	return result
}

// maxBufferedLog bounds the memory one buffered reply holds.
const maxBufferedLog = 4 << 20

func finalResult(job *build.Job, err error, lines []string) progress.Result {
	if err == nil {
		return progress.Result{Log: lines, Image: job.Image(), Status: progress.Success}
	}
	return progress.Result{Log: lines, Image: job.Image(), Status: progress.Failed, Error: oneLine(err)}
}

// oneLine keeps the first line of a BuildKit error: the rest is a stack.
func oneLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return progress.Truncate(msg)
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// codeWriter remembers the status code for the requests metric.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (c *codeWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeWriter) Write(p []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and SetWriteDeadline.
func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
