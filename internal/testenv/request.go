package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/fnserver"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/signature"
)

// ConfigName is the build config's entry name in a request tar.
const ConfigName = "com.openfaas.docker.config"

// TarEntry is one entry of a hand-made build request tar: the header is
// written as is, so a test may set any field of it.
type TarEntry struct {
	Header tar.Header
	Body   string
}

// File is a regular file (0644) holding body.
func File(name, body string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}, Body: body}
}

// Dir is a directory (0755).
func Dir(name string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}}
}

// Symlink is a symbolic link to target.
func Symlink(name, target string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Linkname: target, Mode: 0o777, Typeflag: tar.TypeSymlink}}
}

// Hardlink is a hard link to target, an earlier entry's full tar name.
func Hardlink(name, target string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Linkname: target, Mode: 0o644, Typeflag: tar.TypeLink}}
}

// ConfigEntry is the build config (com.openfaas.docker.config) holding cfg
// as JSON.
func ConfigEntry(t testing.TB, cfg map[string]any) TarEntry {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return File(ConfigName, string(data))
}

// BuildTar writes entries, in order, as one tar stream.
func BuildTar(t testing.TB, entries ...TarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Sign is the X-Build-Signature of body under the payload secret key:
// "sha256=" and the hex HMAC-SHA256.
func Sign(key, body []byte) string {
	return signature.Sign(body, key)
}

// SignedHeader is the header of a build request for body signed with key;
// ndjson asks for the streamed (NDJSON) reply.
func SignedHeader(key, body []byte, ndjson bool) http.Header {
	h := http.Header{}
	h.Set("X-Build-Signature", Sign(key, body))
	h.Set("Content-Type", "application/octet-stream")
	if ndjson {
		h.Set("Accept", "application/x-ndjson")
	}
	return h
}

// Post sends body to url with a copy of header; the response body is
// closed in t.Cleanup.
func Post(t *testing.T, url string, body []byte, header http.Header) *http.Response {
	t.Helper()
	return PostContext(t, context.Background(), url, bytes.NewReader(body), header)
}

// PostContext is Post with a context and a streamed body.
func PostContext(t *testing.T, ctx context.Context, url string, body io.Reader, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// ReadNDJSON reads every line of an NDJSON reply with go-sdk's limits in
// mind: each must be valid JSON and under 64 KiB (bufio.Scanner's default).
func ReadNDJSON(t testing.TB, body io.Reader) []progress.Result {
	t.Helper()
	var out []progress.Result
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		var r progress.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading NDJSON (a line over 64 KiB?): %v", err)
	}
	return out
}

// LogText joins the log lines of results, one a line.
func LogText(results []progress.Result) string {
	var b strings.Builder
	for _, r := range results {
		for _, l := range r.Log {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// ErrorBody decodes a refusal's JSON body and returns its message. It fails
// the test unless the body is JSON with status "failed" and a non-empty
// error.
func ErrorBody(t testing.TB, res *http.Response) string {
	t.Helper()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("error reply is not JSON: %v", err)
	}
	if body.Status != progress.Failed || body.Error == "" {
		t.Fatalf("error reply %+v, want status failed and a message", body)
	}
	return body.Error
}

// TagExists asks the plain-HTTP registry at registryAddr whether repo:tag
// was pushed.
func TagExists(t testing.TB, registryAddr, repo, tag string) bool {
	t.Helper()
	res, err := http.Get("http://" + registryAddr + "/v2/" + repo + "/tags/list")
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

// Serve runs h on a loopback port behind the golang-middleware template's
// own server (internal/fnserver, with cfg's timeouts) until the test ends,
// and returns its base URL.
func Serve(t testing.TB, h http.Handler, cfg config.Config) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fnserver.New(l.Addr().String(), h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}
