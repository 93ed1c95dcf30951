package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entry is one tar entry of a hand-made build request.
type entry struct {
	hdr  tar.Header
	body string
}

func file(name, body string) entry {
	return entry{hdr: tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}, body: body}
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Name: name, Linkname: target, Mode: 0o777, Typeflag: tar.TypeSymlink}}
}

func configEntry(t *testing.T, cfg map[string]any) entry {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return file("com.openfaas.docker.config", string(data))
}

func makeTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// payloadSecret is the HMAC key the builders in these tests are given.
func payloadSecret(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectors, "faas-cli-sealed-test/payload.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(data)
}

func sign(t *testing.T, body []byte) string {
	mac := hmac.New(sha256.New, payloadSecret(t))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func signedHeader(t *testing.T, body []byte, ndjson bool) http.Header {
	h := http.Header{}
	h.Set("X-Build-Signature", sign(t, body))
	h.Set("Content-Type", "application/octet-stream")
	if ndjson {
		h.Set("Accept", "application/x-ndjson")
	}
	return h
}

// tagExists asks the registry whether repo:tag was pushed.
func tagExists(t *testing.T, registry, repo, tag string) bool {
	t.Helper()
	res, err := http.Get("http://" + registry + "/v2/" + repo + "/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tags struct {
		Tags []string `json:"tags"`
	}
	_ = json.NewDecoder(res.Body).Decode(&tags)
	for _, tg := range tags.Tags {
		if tg == tag {
			return true
		}
	}
	return false
}

func errorBody(t *testing.T, res *http.Response) string {
	t.Helper()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("error reply is not JSON: %v", err)
	}
	if body.Status != "failed" || body.Error == "" {
		t.Fatalf("error reply %+v, want status failed and a message", body)
	}
	return body.Error
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
