package handlers_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/contextref"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

func withGuardedFetch(allowPrivateRedirects bool) option {
	return func(o *handlers.BuildOptions) {
		withFetch(1 << 20)(o)
		o.Fetch = contextref.NewClient(10*time.Second, allowPrivateRedirects)
	}
}

// postRefAs posts a signed reference under a call id.
func (f *fixture) postRefAs(id, refURL, digest string) (*http.Response, []byte) {
	f.t.Helper()
	ref, _ := json.Marshal(contextref.Ref{URL: refURL, Digest: digest})
	req := f.request(nil, http.MethodPost, ref, "")
	req.Header.Set("Content-Type", contextref.MediaType)
	req.Header.Set("X-Call-Id", id)
	return f.read(req)
}

// TestContextReferenceRedirectGuard: the reference's own server is on
// loopback and serves; when it redirects to another loopback server the
// build is refused (400, final, kept), the other server is never reached,
// and neither the reply nor the kept result carries the reference's
// credentials or query. With allow_private_fetch_redirects it builds.
func TestContextReferenceRedirectGuard(t *testing.T) {
	tar := configTar(t, map[string]any{"image": testImage})
	digest := sha256Digest(tar)
	origin := testenv.ServeContext(t, tar)
	other := testenv.ServeContext(t, tar)
	withSecret := strings.Replace(origin.URL, "http://", "http://robot:hunter2@", 1)
	redirect := withSecret + "/to?token=s3cr3t&where=" + url.QueryEscape(other.URL+"/ctx.tar?sig=s3cr3t")

	f := newFixture(t, nil, withResults(t), withGuardedFetch(false))
	if res, data := f.postRefAs("direct-call", withSecret+"/ctx.tar?token=s3cr3t", digest); res.StatusCode != http.StatusOK {
		t.Fatalf("reference on the loopback server itself: %d %s", res.StatusCode, data)
	}

	res, data := f.postRefAs("redirect-call", redirect, digest)
	e := checkErrorReply(t, res, data, http.StatusBadRequest)
	if !strings.Contains(e.Error, "loopback") || !strings.Contains(e.Error, "allow_private_fetch_redirects") {
		t.Fatalf("refusal does not say why or how to allow: %q", e.Error)
	}
	if n := other.Hits.Load(); n != 0 {
		t.Fatalf("the redirect target was reached %d times", n)
	}
	if n := f.runner.calls.Load(); n != 1 {
		t.Fatalf("runner called %d times, want 1 (the direct reference)", n)
	}
	_, stored := getResult(t, f.resultServer(), "redirect-call", signID("redirect-call"))
	for _, where := range []string{string(data), string(stored)} {
		for _, secret := range []string{"hunter2", "robot", "s3cr3t"} {
			if strings.Contains(where, secret) {
				t.Errorf("%q in %s", secret, where)
			}
		}
	}
	if !strings.Contains(string(stored), "loopback") {
		t.Fatalf("the refusal was not kept: %s", stored)
	}
	waitEmpty(t, f.opts.SpoolDir)

	allowed := newFixture(t, nil, withGuardedFetch(true))
	res, data = allowed.postRef(redirect, digest, "")
	if res.StatusCode != http.StatusOK || decodeOne(t, data).Status != progress.Success {
		t.Fatalf("with allow_private_fetch_redirects: %d %s", res.StatusCode, data)
	}
	if n := other.Hits.Load(); n != 1 {
		t.Fatalf("the redirect target was reached %d times, want 1", n)
	}
}
