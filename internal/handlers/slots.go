package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/results"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// runHoldingSlot prepares and runs a build in a slot; every build goes
// through here, a redelivery's included. A client that streams waits for
// its slot in the queue, watching its place in it; one that does not (the
// queue-worker, go-sdk's Build) gets 429 when no slot is free, so that its
// caller's retries work. The request is prepared (unpacked and checked)
// before any wait, so that a refusal comes at once, with its real status.
func (o BuildOptions) runHoldingSlot(w http.ResponseWriter, r *http.Request, spooled *signature.Spooled, intake *pipeline.Intake, t tenant.Tenant, start time.Time) results.Result {
	var ticket *schedule.Ticket
	var err error
	if wantsNDJSON(r) {
		ticket, err = o.Slots.Join(t.Name)
	} else {
		ticket, err = o.Slots.TryAcquire(t.Name)
	}
	if err != nil {
		return tooMany(w, o.Slots, err)
	}
	defer ticket.Release()

	prepareCtx, cancel := context.WithTimeout(r.Context(), o.Timeout)
	job, closeTar, refused, ok := o.prepare(prepareCtx, w, r, spooled, intake, t)
	cancel()
	if !ok {
		return refused
	}
	defer closeTar()
	defer job.Close()

	var out *progress.NDJSON
	if ticket.Waiting() {
		// The template's server cuts any reply at write_timeout (10 s by
		// default): a client that waits must not be cut off while it
		// waits, or its stream ends without a final line, which faas-cli
		// takes for success. run() extends it again for the build.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(o.QueueTimeout + time.Minute))
		out = beginStream(w, start)
		if res, ok := o.waitForSlot(r, ticket, out, job.Image()); !ok {
			return res
		}
	}
	return o.run(w, r, job, start, out)
}

// waitForSlot waits in the queue, telling the client its place; when no
// slot comes in queue_timeout, or the client leaves, it ends the stream.
func (o BuildOptions) waitForSlot(r *http.Request, ticket *schedule.Ticket, out *progress.NDJSON, image string) (results.Result, bool) {
	format := o.LogFormat
	ctx, cancel := context.WithTimeout(r.Context(), o.QueueTimeout)
	defer cancel()
	err := ticket.Wait(ctx, func(place, queued int) {
		_ = out.Progress([]string{format.Status(time.Now(), fmt.Sprintf("waiting for a build slot: %d of %d in the queue", place, queued))})
	})
	if err == nil {
		return results.Result{}, true
	}
	msg := fmt.Sprintf("no build slot came free within %s (queue_timeout): retry later", o.QueueTimeout)
	if r.Context().Err() != nil {
		msg = "the client left while waiting for a build slot"
	}
	res := progress.Result{Image: image, Status: progress.Failed, Error: msg}
	_ = out.Final(res)
	return results.Result{Code: http.StatusTooManyRequests, Body: finalBody(res), Transient: true}, false
}

// tooMany answers 429. The result is not kept: a later delivery may find
// a free slot.
func tooMany(w http.ResponseWriter, slots *schedule.Slots, err error) results.Result {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	msg := err.Error()
	if errors.Is(err, schedule.ErrFull) || errors.Is(err, schedule.ErrQueueFull) {
		msg = fmt.Sprintf("Concurrent request limit exceeded. Max concurrent requests: %d (%v)", slots.Max(), err)
	}
	res := refuse(w, http.StatusTooManyRequests, msg)
	res.Transient = true
	return res
}

// retryAfterSeconds is what a client at capacity is told to wait.
const retryAfterSeconds = 5
