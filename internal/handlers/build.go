package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildlog"
	"github.com/fnbuilder/fnbuilder/internal/contextref"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/metrics"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/reply"
	"github.com/fnbuilder/fnbuilder/internal/results"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// BuildOptions configures MakeBuildHandler.
type BuildOptions struct {
	Pipeline *pipeline.Pipeline
	Metrics  *metrics.Metrics
	// Tenants are who may build, each with its own HMAC key: the key that
	// verifies a request names its tenant.
	Tenants *tenant.Directory
	// DisableHMAC accepts unsigned requests, as the (only) tenant.
	DisableHMAC bool
	// SpoolDir holds request bodies while their signature is checked.
	SpoolDir string
	// SpoolMemory keeps small request bodies in memory instead; nil keeps
	// none there.
	SpoolMemory  *signature.Memory
	MaxBodyBytes int64
	// Unverified bounds the bytes of bodies whose signature is not yet
	// checked, across requests; nil means unlimited.
	Unverified *UnverifiedBudget
	// UploadTimeout bounds the time a request's body takes to arrive; 0
	// leaves it to the server's read timeout.
	UploadTimeout time.Duration
	// Slots bounds concurrent builds and queues streaming clients; nil
	// means unlimited.
	Slots *schedule.Slots
	// QueueTimeout bounds how long a streaming client waits for a slot.
	QueueTimeout time.Duration
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
	Retry pipeline.Backoff
	// LogFormat is the form of the build log's lines.
	LogFormat buildlog.Format
	// StreamHold is how long a stream's first byte waits after the
	// request body's end, for a proxy in front (streamhold.go); 0 waits
	// not at all.
	StreamHold time.Duration
}

// MakeBuildHandler answers POST /build: verify, index, build, reply.
func MakeBuildHandler(o BuildOptions) http.HandlerFunc {
	if o.Slots == nil {
		o.Slots = schedule.New(0, 0)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if wantsNDJSON(r) && r.Method == http.MethodPost {
			w = &streamRefusals{ResponseWriter: holdStream(w, r, o.StreamHold)}
		}
		// Outside streamRefusals: the metric counts a refusal's real status.
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
	// A redelivered async request waits for its first delivery without a
	// slot: at capacity it would otherwise get a 429 of its own. Builds
	// themselves, a redelivery's included, always run holding one.
	// Which tenant it belongs to is known only once it is verified, so
	// this looks for the call id under any tenant.
	callID := o.callID(r)
	joining := callID != "" && o.anyTenantHas(callID)
	// A full builder says so at once, before reading any body: to a
	// streaming client when even the queue is full, to others when no slot
	// is free. A slot or a place in the queue is taken only once the
	// signature holds, so that unsigned or slow uploads keep no one out.
	if !joining {
		switch {
		case wantsNDJSON(r) && o.Slots.QueueFull():
			tooMany(w, o.Slots, schedule.ErrQueueFull)
			return
		case !wantsNDJSON(r) && (o.Slots.Full() || o.Slots.Queued() > 0):
			tooMany(w, o.Slots, schedule.ErrFull)
			return
		}
	}
	start := time.Now()

	spooled, t, intake, ok := o.receive(w, r)
	if !ok {
		return
	}
	defer spooled.Close()
	defer intake.Abandon() // when no build took it
	if callID == "" {
		o.runHoldingSlot(w, r, spooled, intake, t, start)
		return
	}
	fingerprint := r.Header.Get("X-Build-Signature")
	res, shared, err := o.Results.Do(r.Context(), resultID(t, callID), func() results.Result {
		res := o.runHoldingSlot(w, r, spooled, intake, t, start)
		res.Request = fingerprint
		return res
	})
	switch {
	case err != nil:
		// Its client left while it waited for the first delivery: no one
		// to answer, and its spooled body goes now, not when that ends.
	case !shared:
	case res.Request != fingerprint && !o.DisableHMAC:
		reply.Error(w, http.StatusConflict, "X-Call-Id "+callID+" was already used for a different request body")
	default:
		replay(w, r, res, start)
	}
}

// callID is the gateway's X-Call-Id when results are kept.
func (o BuildOptions) callID(r *http.Request) string {
	id := r.Header.Get("X-Call-Id")
	if o.Results == nil || !results.ValidID(id) {
		return ""
	}
	return id
}

// resultID keeps each tenant's results apart: a call id another tenant
// used is a different result. Tenant names are DNS labels, so the first
// "." ends the tenant.
func resultID(t tenant.Tenant, callID string) string { return t.Name + "." + callID }

// anyTenantHas reports whether a build of callID runs or ran for any tenant.
func (o BuildOptions) anyTenantHas(callID string) bool {
	for _, t := range o.Tenants.Tenants() {
		if id := resultID(t, callID); o.Results.Running(id) || o.Results.Has(id) {
			return true
		}
	}
	return false
}

// receive spools the body and checks its signature, which names its
// tenant; on failure it has answered already. A build tar is indexed while
// it arrives (intake); a context reference has no intake.
func (o BuildOptions) receive(w http.ResponseWriter, r *http.Request) (*signature.Spooled, tenant.Tenant, *pipeline.Intake, bool) {
	if o.MaxBodyBytes > 0 && r.ContentLength > o.MaxBodyBytes {
		reply.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is over the limit of %d bytes", r.ContentLength, o.MaxBodyBytes))
		return nil, tenant.Tenant{}, nil, false
	}
	if !o.Unverified.admit(w, r.ContentLength) {
		return nil, tenant.Tenant{}, nil, false
	}
	start := time.Now()
	upload := o.unverifiedBody(w, r)
	defer upload.Close()
	body := &countingReader{r: upload}
	opts := signature.Options{Dir: o.SpoolDir, Limit: o.MaxBodyBytes, Memory: o.SpoolMemory, Size: r.ContentLength}
	var intake *pipeline.Intake
	if !isContextRef(r) {
		intake = o.Pipeline.Intake(r.Context())
		opts.Tee = intake
	}
	spooled, t, err := verifier{o.Tenants, o.DisableHMAC, "X-Build-Signature"}.spool(w, r, body, opts)
	o.Metrics.BytesReceived.Add(float64(body.n))
	if err != nil {
		intake.Abandon()
		return nil, tenant.Tenant{}, nil, false
	}
	o.Metrics.ReceiveDuration.Observe(time.Since(start).Seconds())
	return spooled, t, intake, true
}

// prepare indexes the request (or takes intake's index) and checks it
// against what its tenant may do; on a refusal it has answered already,
// with ok false. BuildKit reads the context from the tar while the job
// runs: closeTar, when ok, is for after the job.
func (o BuildOptions) prepare(ctx context.Context, w http.ResponseWriter, r *http.Request, spooled *signature.Spooled, intake *pipeline.Intake, t tenant.Tenant) (_ *pipeline.Job, closeTar func(), _ results.Result, ok bool) {
	tar, closeTar, err := o.openTar(ctx, r, spooled)
	if err != nil {
		code, msg := fetchStatus(err)
		return nil, nil, refuse(w, code, msg), false
	}
	job, err := o.Pipeline.Prepare(ctx, tar, intake, t)
	if err == nil {
		return job, closeTar, results.Result{}, true
	}
	closeTar()
	var in *pipeline.InputError
	var gwErr *deploy.GatewayError
	switch {
	case errors.As(err, &in) && in.TooLarge:
		return nil, nil, refuse(w, http.StatusRequestEntityTooLarge, err.Error()), false
	case errors.As(err, &in):
		return nil, nil, refuse(w, http.StatusBadRequest, err.Error()), false
	case errors.As(err, &gwErr):
		return nil, nil, refuse(w, http.StatusBadGateway, "check the function to deploy: "+err.Error()), false
	}
	log.Printf("build: %v", err)
	return nil, nil, refuse(w, http.StatusInternalServerError, err.Error()), false
}

// run builds a prepared job in the slot it holds, deploys if asked, and
// answers: on out when the stream has begun already (it waited in the
// queue), else as the request asked. It returns what it answered so that
// a redelivery can be given the same.
func (o BuildOptions) run(w http.ResponseWriter, r *http.Request, job *pipeline.Job, start time.Time, out *progress.NDJSON) results.Result {
	// build_timeout counts from the slot: a wait in the queue is not the build's.
	ctx, cancel := context.WithTimeout(buildlog.WithFormat(r.Context(), o.LogFormat), o.Timeout)
	defer cancel()

	// The template's server cuts any reply at write_timeout (10 s by
	// default); a build may take far longer, so this reply gets its own.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(o.Timeout + time.Minute))

	o.Metrics.Inflight.Inc()
	defer o.Metrics.Inflight.Dec()
	collected := progress.NewLog(maxBufferedLog)
	var result progress.Result
	code := http.StatusOK
	if wantsNDJSON(r) {
		if out == nil {
			out = beginStream(w, start)
		}
		result = stream(ctx, out, job, o.KeepAlive, collected)
		result.Log = collected.Lines()
		result.Duration = progress.Since(start)
	} else {
		// Kept as answered (log and duration included): a redelivery and
		// GET /results get the very body the first delivery got.
		result, code = buffered(ctx, w, job, start, collected)
	}
	o.Metrics.BuildDuration.WithLabelValues(result.Status).Observe(time.Since(start).Seconds())

	if code == http.StatusOK && result.Status == progress.Failed {
		code = http.StatusInternalServerError // what a buffered client would get
	}
	// A build cut short by its own client is no answer to keep: a
	// redelivery should build again.
	return results.Result{Code: code, Body: finalBody(result), Transient: r.Context().Err() != nil}
}

// finalBody is a result as reply.JSON writes it.
func finalBody(result progress.Result) []byte {
	body, _ := json.Marshal(result)
	return append(body, '\n')
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
func (o BuildOptions) openTar(ctx context.Context, r *http.Request, spooled *signature.Spooled) (pipeline.Body, func(), error) {
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
		var refused *contextref.AddressRefusedError
		switch {
		case errors.As(err, &st):
			return st.Transient()
		case errors.As(err, &tooLarge), errors.Is(err, contextref.ErrDigestMismatch), errors.As(err, &refused), ctx.Err() != nil:
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
	var refused *contextref.AddressRefusedError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.As(err, &refused):
		return http.StatusBadRequest, err.Error() + " (build-fn setting allow_private_fetch_redirects)"
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

// beginStream answers 200 at once and an empty progress line; failures
// after this point can only be a final "failed" line.
func beginStream(w http.ResponseWriter, start time.Time) *progress.NDJSON {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := progress.NewNDJSON(w, http.NewResponseController(w), start)
	_ = out.Progress(nil)
	return out
}

// stream runs the job, one NDJSON line per batch of log lines, keep-alive
// lines while it is quiet, and the final line.
func stream(ctx context.Context, out *progress.NDJSON, job *pipeline.Job, keepAlive time.Duration, collected *progress.Log) progress.Result {
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
func buffered(ctx context.Context, w http.ResponseWriter, job *pipeline.Job, start time.Time, collected *progress.Log) (progress.Result, int) {
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
func runJob(ctx context.Context, job *pipeline.Job, logf func([]string)) progress.Result {
	if err := job.Run(ctx, logf); err != nil {
		return finalResult(job, err)
	}
	deployed, err := job.Deploy(ctx, logf)
	result := finalResult(job, err)
	if deployed != nil {
		result.Deploy = &progress.Deployed{Name: deployed.Name, Namespace: deployed.Namespace, Image: deployed.Image, Action: deployed.Action}
	}
	return result
}

// maxBufferedLog bounds the memory one buffered reply holds.
const maxBufferedLog = 4 << 20

func finalResult(job *pipeline.Job, err error) progress.Result {
	// A build that pushed and then failed to deploy still says what it pushed.
	res := progress.Result{Image: job.Image(), Digest: job.Digest(), Status: progress.Success}
	if err != nil {
		res.Status, res.Error = progress.Failed, oneLine(err)
	}
	return res
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
