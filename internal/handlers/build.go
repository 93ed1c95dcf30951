package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/build"
	"github.com/fnbuilder/fnbuilder/internal/contextref"
	"github.com/fnbuilder/fnbuilder/internal/metrics"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/results"
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
	SpoolDir string
	// SpoolMemory keeps small request bodies in memory instead; nil keeps
	// none there.
	SpoolMemory  *signature.Memory
	MaxBodyBytes int64
	// Slots bounds concurrent builds; nil means unlimited.
	Slots *Slots
	// Timeout bounds one build, from accepted request to final line.
	Timeout time.Duration
	// KeepAlive is the interval of empty progress lines while a stream is
	// quiet, so that proxies do not close an idle connection.
	KeepAlive time.Duration
	// Results keeps async results by X-Call-Id; nil disables both the
	// redelivery guard and GET /results/{id}.
	Results *results.Store
	// Fetch downloads context references (contextref.MediaType bodies).
	Fetch *http.Client
	// MaxFetchBytes bounds a referenced context.
	MaxFetchBytes int64
	// Retry is the schedule for fetching a referenced context.
	Retry build.Backoff
}

// MakeBuildHandler answers POST /build: verify, index, build, reply.
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
	// A redelivered async request joins its first delivery instead of
	// taking a slot: at capacity it would otherwise get a 429 of its own.
	callID := o.callID(r)
	joining := callID != "" && (o.Results.Running(callID) || o.Results.Has(callID))
	// A full builder says so at once, before reading any body; a slot is
	// taken only once the signature holds, so that unsigned or slow
	// uploads cannot keep signed builds out.
	if !joining && o.Slots.Full() {
		tooMany(w, o.Slots)
		return
	}
	start := time.Now()

	spooled, intake, ok := o.receive(w, r)
	if !ok {
		return
	}
	defer spooled.Close()
	defer intake.Abandon() // when no build took it
	if !joining {
		if !o.Slots.TryAcquire() {
			tooMany(w, o.Slots)
			return
		}
		defer o.Slots.Release()
	}
	if callID == "" {
		o.run(w, r, spooled, intake, start)
		return
	}
	fingerprint := r.Header.Get("X-Build-Signature")
	res, shared := o.Results.Do(callID, func() results.Result {
		res := o.run(w, r, spooled, intake, start)
		res.Request = fingerprint
		return res
	})
	switch {
	case !shared:
	case res.Request != fingerprint && !o.DisableHMAC:
		reply.Error(w, http.StatusConflict, "X-Call-Id "+callID+" was already used for a different request body")
	default:
		replay(w, r, res, start)
	}
}

func tooMany(w http.ResponseWriter, slots *Slots) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	reply.Error(w, http.StatusTooManyRequests,
		fmt.Sprintf("Concurrent request limit exceeded. Max concurrent requests: %d", slots.Max()))
}

// callID is the gateway's X-Call-Id when results are kept.
func (o BuildOptions) callID(r *http.Request) string {
	id := r.Header.Get("X-Call-Id")
	if o.Results == nil || !results.ValidID(id) {
		return ""
	}
	return id
}

// receive spools the body and checks its signature; on failure it has
// answered already. A build tar is indexed while it arrives (intake); a
// context reference has no intake.
func (o BuildOptions) receive(w http.ResponseWriter, r *http.Request) (*signature.Spooled, *build.Intake, bool) {
	if o.MaxBodyBytes > 0 && r.ContentLength > o.MaxBodyBytes {
		reply.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is over the limit of %d bytes", r.ContentLength, o.MaxBodyBytes))
		return nil, nil, false
	}
	key, err := o.hmacKey()
	if err != nil {
		log.Printf("build: %v", err)
		reply.Error(w, http.StatusInternalServerError, "the builder's payload secret is not usable")
		return nil, nil, false
	}
	body := &countingReader{r: r.Body}
	opts := signature.Options{Dir: o.SpoolDir, Limit: o.MaxBodyBytes, Memory: o.SpoolMemory, Size: r.ContentLength}
	var intake *build.Intake
	if !isContextRef(r) {
		intake = o.Pipeline.Intake(r.Context())
		opts.Tee = intake
	}
	var spooled *signature.Spooled
	if o.DisableHMAC {
		spooled, err = signature.SpoolUnverified(body, opts)
	} else {
		spooled, err = signature.Spool(body, r.Header.Get("X-Build-Signature"), key, opts)
	}
	o.Metrics.BytesReceived.Add(float64(body.n))
	if err != nil {
		intake.Abandon()
		code, msg := spoolStatus(err, "X-Build-Signature")
		reply.Error(w, code, msg)
		return nil, nil, false
	}
	return spooled, intake, true
}

// run indexes (or takes intake's index), builds, deploys if asked, and
// answers; it returns what it answered so that a redelivery can be given
// the same.
func (o BuildOptions) run(w http.ResponseWriter, r *http.Request, spooled *signature.Spooled, intake *build.Intake, start time.Time) results.Result {
	ctx, cancel := context.WithTimeout(r.Context(), o.Timeout)
	defer cancel()

	tar, closeTar, err := o.openTar(ctx, r, spooled)
	if err != nil {
		code, msg := fetchStatus(err)
		return refuse(w, code, msg)
	}
	defer closeTar() // BuildKit reads the context from it until the job ends
	job, err := o.Pipeline.Prepare(ctx, tar, intake)
	if err != nil {
		var in *build.InputError
		switch {
		case errors.As(err, &in) && in.TooLarge:
			return refuse(w, http.StatusRequestEntityTooLarge, err.Error())
		case errors.As(err, &in):
			return refuse(w, http.StatusBadRequest, err.Error())
		default:
			log.Printf("build: %v", err)
			return refuse(w, http.StatusInternalServerError, err.Error())
		}
	}
	defer job.Close()

	// The template's server cuts any reply at write_timeout (10 s by
	// default); a build may take far longer, so this reply gets its own.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(o.Timeout + time.Minute))

	o.Metrics.Inflight.Inc()
	defer o.Metrics.Inflight.Dec()
	collected := progress.NewLog(maxBufferedLog)
	var result progress.Result
	code := http.StatusOK
	if wantsNDJSON(r) {
		result = stream(ctx, w, job, start, o.KeepAlive, collected)
		result.Log = collected.Lines()
		result.Duration = progress.Since(start)
	} else {
		// Kept as answered (log and duration included): a redelivery and
		// GET /results get the very body the first delivery got.
		result, code = buffered(ctx, w, job, start, collected)
	}
	o.Metrics.BuildDuration.WithLabelValues(result.Status).Observe(time.Since(start).Seconds())

	body, _ := json.Marshal(result)
	body = append(body, '\n') // as reply.JSON writes it
	if code == http.StatusOK && result.Status == progress.Failed {
		code = http.StatusInternalServerError // what a buffered client would get
	}
	// A build cut short by its own client is no answer to keep: a
	// redelivery should build again.
	return results.Result{Code: code, Body: body, Transient: r.Context().Err() != nil}
}

// refuse answers an error before any build started.
func refuse(w http.ResponseWriter, code int, msg string) results.Result {
	reply.Error(w, code, msg)
	body, _ := json.Marshal(map[string]string{"status": progress.Failed, "error": msg})
	// A refusal for bad input is final; a server-side one may pass.
	return results.Result{Code: code, Body: body, Transient: code >= 500}
}

// isContextRef says whether the body is a context reference, not a tar.
func isContextRef(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == contextref.MediaType
}

// openTar returns the request's tar: the body itself, or the tar a signed
// context reference points at.
func (o BuildOptions) openTar(ctx context.Context, r *http.Request, spooled *signature.Spooled) (build.Body, func(), error) {
	if !isContextRef(r) {
		return spooled, func() {}, nil
	}
	ref, err := contextref.Parse(spooled.Reader())
	if err != nil {
		return nil, nil, err
	}
	var fetched *contextref.Fetched
	// A server error or a broken connection may pass; a wrong digest, a
	// 4xx or an oversize context will not.
	transient := func(err error) bool {
		var st *contextref.StatusError
		var tooLarge *contextref.TooLargeError
		switch {
		case errors.As(err, &st):
			return st.Transient()
		case errors.As(err, &tooLarge), errors.Is(err, contextref.ErrDigestMismatch), ctx.Err() != nil:
			return false
		}
		return true
	}
	err = o.Retry.Do(ctx, "fetch context", transient, func([]string) {}, func() error {
		var err error
		fetched, err = contextref.Fetch(ctx, o.Fetch, ref, o.SpoolDir, o.MaxFetchBytes)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return fetched, func() { fetched.Close() }, nil
}

// fetchStatus maps a context reference failure to a status code.
func fetchStatus(err error) (int, string) {
	var tooLarge *contextref.TooLargeError
	var st *contextref.StatusError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, contextref.ErrDigestMismatch), errors.Is(err, contextref.ErrInvalid):
		return http.StatusBadRequest, err.Error()
	case errors.As(err, &st) && !st.Transient():
		return http.StatusBadRequest, err.Error()
	case errors.As(err, &st), errors.Is(err, context.DeadlineExceeded):
		return http.StatusBadGateway, err.Error()
	}
	return http.StatusBadGateway, err.Error()
}

// replay answers a redelivery with the first delivery's result.
func replay(w http.ResponseWriter, r *http.Request, res results.Result, start time.Time) {
	w.Header().Set("X-Fnbuilder-Replayed", "true")
	if !wantsNDJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(res.Code)
		_, _ = w.Write(res.Body)
		return
	}
	var result progress.Result
	if err := json.Unmarshal(res.Body, &result); err != nil || res.Code >= 300 && result.Log == nil && result.Image == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(res.Code)
		_, _ = w.Write(res.Body)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	out := progress.NewNDJSON(w, http.NewResponseController(w), start)
	_ = out.Final(result) // the log goes out in batches before the final line
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

func spoolStatus(err error, header string) (int, string) {
	var tooLarge *signature.TooLargeError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, signature.ErrMissing):
		return http.StatusUnauthorized, "missing " + header + " header"
	case errors.Is(err, signature.ErrMalformed):
		return http.StatusUnauthorized, "malformed " + header + " header, want sha256=<hex>"
	case errors.Is(err, signature.ErrMismatch):
		return http.StatusUnauthorized, header + " does not match the request"
	}
	return http.StatusBadRequest, "read request body: " + err.Error()
}

func wantsNDJSON(r *http.Request) bool {
	return strings.Contains(strings.ToLower(r.Header.Get("Accept")), "application/x-ndjson")
}

// stream answers 200 at once and then one NDJSON line per batch of log
// lines; failures after this point can only be a final "failed" line.
func stream(ctx context.Context, w http.ResponseWriter, job *build.Job, start time.Time, keepAlive time.Duration, collected *progress.Log) progress.Result {
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
	result := runJob(ctx, job, func(lines []string) {
		collected.Add(lines)
		_ = out.Progress(lines)
	})
	close(stop)
	keepAlives.Wait()
	_ = out.Final(result)
	return result
}

// buffered answers one JSON object after the build: 200 on success, 500
// with the same object on failure (old clients read the body on any code).
func buffered(ctx context.Context, w http.ResponseWriter, job *build.Job, start time.Time, collected *progress.Log) (progress.Result, int) {
	result := runJob(ctx, job, collected.Add)
	result.Log = collected.Lines()
	result.Duration = progress.Since(start)
	code := http.StatusOK
	if result.Status != progress.Success {
		code = http.StatusInternalServerError
	}
	reply.JSON(w, code, result)
	return result, code
}

// runJob builds, then deploys when the request asked for it. A failed
// build is never deployed.
func runJob(ctx context.Context, job *build.Job, logf func([]string)) progress.Result {
	if err := job.Run(ctx, logf); err != nil {
		return finalResult(job, err)
	}
	deployed, err := job.Deploy(ctx, logf)
	result := finalResult(job, err)
	result.Deploy = deployed
	return result
}

// maxBufferedLog bounds the memory one buffered reply holds.
const maxBufferedLog = 4 << 20

func finalResult(job *build.Job, err error) progress.Result {
	if err == nil {
		return progress.Result{Image: job.Image(), Status: progress.Success}
	}
	return progress.Result{Image: job.Image(), Status: progress.Failed, Error: oneLine(err)}
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
