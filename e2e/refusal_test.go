package e2e

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// testRefusals sends one bad request per case and checks the status code,
// a JSON error naming the problem, no solve started, no image pushed and
// nothing left in the work directory.
func testRefusals(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, map[string]string{"max_request_bytes": "65536", "max_context_bytes": "8192"})
	image := s.Reg.Addr + "/refused:1"
	cfg := testenv.ConfigEntry(t, map[string]any{"image": image})
	dockerfile := testenv.File("context/Dockerfile", "FROM "+s.Base+"\n")
	good := testenv.BuildTar(t, testenv.Dir("context"), dockerfile, cfg)

	otherKey, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := secrets.Seal(otherKey.Public, map[string][]byte{"k": []byte("v")})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		body   []byte
		header func([]byte) http.Header
		code   int
		msg    string
	}{
		{"no signature", good, func([]byte) http.Header { return http.Header{} }, 401, "missing X-Build-Signature"},
		{"malformed signature", good, func([]byte) http.Header {
			return http.Header{"X-Build-Signature": {"sha1=abc"}}
		}, 401, "malformed"},
		{"wrong signature", good, func(body []byte) http.Header {
			return testenv.SignedHeader(payloadSecret(t), append([]byte("x"), body...), true)
		}, 401, "does not match"},
		{"path traversal", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.File("context/../../escape", "x"), cfg), nil, 400, "escape"},
		{"symlink escape", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.Symlink("context/etc", "/etc"), cfg), nil, 400, "context/etc"},
		{"context too large", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.File("context/big", strings.Repeat("x", 10000)), cfg), nil, 413, "context/big"},
		{"body too large", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.File("context/huge", strings.Repeat("x", 70000)), cfg), nil, 413, "limit"},
		{"bad config JSON", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.File("com.openfaas.docker.config", "{image:")), nil, 400, "com.openfaas.docker.config"},
		{"unknown key_id", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, cfg, testenv.File("com.openfaas.secrets", string(foreign))), nil, 400, otherKeyID(t, otherKey.Public)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			header := testenv.SignedHeader(payloadSecret(t), c.body, true)
			if c.header != nil {
				header = c.header(c.body)
			}
			before := b.runs.Load()
			res := testenv.Post(t, b.url+"/build", c.body, header)
			if testenv.Status(res) != c.code {
				t.Fatalf("status %d, want %d", testenv.Status(res), c.code)
			}
			if msg := testenv.ErrorBody(t, res); !strings.Contains(msg, c.msg) {
				t.Fatalf("error %q does not mention %q", msg, c.msg)
			}
			if b.runs.Load() != before {
				t.Fatal("a refused request reached BuildKit")
			}
			if entries, _ := os.ReadDir(b.workDir); len(entries) != 0 {
				t.Fatalf("refused request left files behind: %v", entries)
			}
		})
	}
	if testenv.TagExists(t, s.Reg, "refused", "1") {
		t.Fatal("a refused request pushed an image")
	}
}

func otherKeyID(t *testing.T, pub []byte) string {
	id, err := secrets.KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testAtCapacity: with max_inflight=1 and no queue a second build gets
// 429 with Retry-After while the first runs (a streaming client as its
// stream's line), and readiness turns false.
func testAtCapacity(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, map[string]string{"max_inflight": "1", "max_queued": "0"})
	slow := testenv.BuildTar(t, testenv.Dir("context"),
		testenv.File("context/Dockerfile", "FROM "+s.Base+"\nRUN sleep 4 && echo slow-"+time.Now().Format("150405.000")+"\n"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/slow:1"}))

	first := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, b.url+"/build", strings.NewReader(string(slow)))
		req.Header = testenv.SignedHeader(payloadSecret(t), slow, true)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		}
		first <- res
	}()
	waitFor(t, func() bool { return b.runs.Load() == 1 })

	fast := testenv.BuildTar(t, testenv.Dir("context"), testenv.File("context/Dockerfile", "FROM "+s.Base+"\n"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/fast:1"}))
	for _, streaming := range []bool{true, false} {
		res := testenv.Post(t, b.url+"/build", fast, testenv.SignedHeader(payloadSecret(t), fast, streaming))
		if testenv.Status(res) != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
			t.Fatalf("streaming %v: status %d Retry-After %q, want 429 with Retry-After", streaming, testenv.Status(res), res.Header.Get("Retry-After"))
		}
		if msg := testenv.ErrorBody(t, res); !strings.Contains(msg, "Concurrent request limit exceeded") {
			t.Fatalf("429 message %q", msg)
		}
	}
	ready, err := http.Get(b.url + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	ready.Body.Close()
	if ready.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready = %d at capacity, want 503", ready.StatusCode)
	}
	if b.runs.Load() != 1 {
		t.Fatal("the refused build reached BuildKit")
	}

	r := <-first
	defer r.Body.Close()
	results := testenv.ReadNDJSON(t, r.Body)
	if final := results[len(results)-1]; final.Status != progress.Success {
		t.Fatalf("first build %+v", final)
	}
	// The slot is free again.
	res := testenv.Post(t, b.url+"/build", fast, testenv.SignedHeader(payloadSecret(t), fast, true))
	if results := testenv.ReadNDJSON(t, res.Body); results[len(results)-1].Status != progress.Success {
		t.Fatalf("build after capacity freed: %+v", results[len(results)-1])
	}
}

// testClientDisconnect: a client that goes away cancels the solve and frees
// its slot, so the next build runs.
func testClientDisconnect(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, map[string]string{"max_inflight": "1"})
	slow := testenv.BuildTar(t, testenv.Dir("context"),
		testenv.File("context/Dockerfile", "FROM "+s.Base+"\nRUN sleep 60\n"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/abandoned:1"}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.url+"/build", strings.NewReader(string(slow)))
	req.Header = testenv.SignedHeader(payloadSecret(t), slow, true)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return b.runs.Load() == 1 })
	cancel()
	res.Body.Close()

	fast := testenv.BuildTar(t, testenv.Dir("context"), testenv.File("context/Dockerfile", "FROM "+s.Base+"\n"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/after-disconnect:1"}))
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := testenv.Post(t, b.url+"/build", fast, testenv.SignedHeader(payloadSecret(t), fast, true))
		if res.StatusCode == http.StatusOK {
			results := testenv.ReadNDJSON(t, res.Body)
			if final := results[len(results)-1]; final.Status != progress.Success {
				t.Fatalf("build after disconnect: %+v", final)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot still taken 30 s after the client left (status %d)", res.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if testenv.TagExists(t, s.Reg, "abandoned", "1") {
		t.Fatal("the abandoned build was pushed")
	}
	if entries, _ := os.ReadDir(b.workDir); len(entries) != 0 {
		t.Fatalf("work dir not cleaned: %v", entries)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
