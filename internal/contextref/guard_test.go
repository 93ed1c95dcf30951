package contextref_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/contextref"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

func TestNonPublicAddresses(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1":             "loopback",
		"127.255.0.9":           "loopback",
		"::1":                   "loopback",
		"::ffff:127.0.0.1":      "loopback",
		"169.254.169.254":       "link-local",
		"fe80::1":               "link-local",
		"10.0.0.1":              "private",
		"172.16.5.4":            "private",
		"192.168.1.1":           "private",
		"fd00::1":               "private",
		"100.64.0.1":            "shared (CGNAT)",
		"100.127.255.254":       "shared (CGNAT)",
		"0.0.0.0":               "unspecified",
		"::":                    "unspecified",
		"0.1.2.3":               "this-network",
		"224.0.0.1":             "link-local",
		"239.1.2.3":             "multicast",
		"ff02::1":               "link-local",
		"ff05::1":               "multicast",
		"255.255.255.255":       "reserved",
		"198.18.0.1":            "benchmarking",
		"64:ff9b::a9fe:a9fe":    "link-local (inside 64:ff9b::/96)", // NAT64 of 169.254.169.254
		"2002:7f00:1::1":        "loopback (inside 2002::/16)",      // 6to4 of 127.0.0.1
		"8.8.8.8":               "",
		"100.128.0.1":           "",
		"172.32.0.1":            "",
		"2001:4860:4860::8888":  "",
		"64:ff9b::808:808":      "",
		"2a00:1450:4001:81c::e": "",
	} {
		ip := netip.MustParseAddr(addr)
		if got := contextref.NonPublicForTest(ip); got != want {
			t.Errorf("%s: %q, want %q", addr, got, want)
		}
	}
}

func fetchVia(client *http.Client, url, digest, dir string) (*contextref.Fetched, error) {
	return contextref.Fetch(context.Background(), client, contextref.Ref{URL: url, Digest: digest}, dir, 0)
}

// TestRedirectToNonPublicAddress: the reference's own server is on
// loopback (httptest listens on 127.0.0.1) and is fetched; a redirect from
// it to another loopback server, or to any other non-public address, is
// refused before connecting, unless allowed.
func TestRedirectToNonPublicAddress(t *testing.T) {
	body := []byte("a build tar")
	digest := digestOf(body)
	origin := testenv.ServeContext(t, body)
	other := testenv.ServeContext(t, body)
	client := contextref.NewClient(10*time.Second, false)
	dir := t.TempDir()

	// Allowed: the signed URL's own host, loopback or not, and redirects
	// that stay on it.
	for _, url := range []string{origin.URL + "/ctx.tar", origin.URL + "/to?where=/ctx.tar", origin.URL + "/to?where=" + origin.URL + "/ctx.tar"} {
		f, err := fetchVia(client, url, digest, dir)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		f.Close()
	}

	_, otherPort, _ := net.SplitHostPort(other.Listener.Addr().String())
	for where, reason := range map[string]string{
		other.URL + "/ctx.tar": "loopback",
		// A name is resolved first: the dialled address is what counts.
		"http://localhost:" + otherPort + "/ctx.tar":        "loopback",
		"http://169.254.169.254/latest/meta-data/iam/":      "link-local",
		"http://10.20.30.40/ctx.tar":                        "private",
		"http://100.64.0.7/ctx.tar":                         "shared (CGNAT)",
		"http://0.0.0.0:" + otherPort + "/ctx.tar":          "unspecified",
		"http://[::ffff:127.0.0.1]:" + otherPort + "/x.tar": "loopback",
	} {
		_, err := fetchVia(client, origin.URL+"/to?where="+where, digest, dir)
		var refused *contextref.AddressRefusedError
		if !errors.As(err, &refused) || refused.Reason != reason {
			t.Errorf("redirect to %s: %v, want refused as %s", where, err, reason)
		}
	}
	if n := other.Hits.Load(); n != 0 {
		t.Fatalf("the redirect target was reached %d times", n)
	}
	assertEmpty(t, dir)

	// Allowed by the setting: the same redirect goes through.
	f, err := fetchVia(contextref.NewClient(10*time.Second, true), origin.URL+"/to?where="+other.URL+"/ctx.tar", digest, dir)
	if err != nil {
		t.Fatalf("with private redirects allowed: %v", err)
	}
	f.Close()
	if n := other.Hits.Load(); n != 1 {
		t.Fatalf("the redirect target was reached %d times, want 1", n)
	}
}

// TestFetchErrorsNameNoCredentials: whatever fails, the error names the
// URL without its userinfo or query.
func TestFetchErrorsNameNoCredentials(t *testing.T) {
	secrets := []string{"hunter2", "robot", "s3cr3t", "X-Amz-Signature", "deadbeef"}
	notFound, _ := server(t, http.StatusNotFound, nil, false)
	origin := testenv.ServeContext(t, nil)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	withCreds := func(base, path string) string {
		return strings.Replace(base, "http://", "http://robot:hunter2@", 1) + path + "?token=s3cr3t&X-Amz-Signature=deadbeef"
	}
	client := contextref.NewClient(10*time.Second, false)
	for name, ref := range map[string]string{
		"404":                 withCreds(notFound.URL, "/ctx.tar"),
		"connection refused":  withCreds(closed.URL, "/ctx.tar"),
		"redirect refused":    origin.URL + "/to?where=" + url.QueryEscape(withCreds("http://127.0.0.2:9", "/blob")),
		"bad url":             "http://robot:hunter2@[::1/ctx.tar?token=s3cr3t&X-Amz-Signature=deadbeef",
		"redirect bad target": origin.URL + "/to?where=" + url.QueryEscape(withCreds("http://127.0.0.1:99999", "/blob")),
	} {
		_, err := fetchVia(client, ref, goodDigest, t.TempDir())
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q contains %q", name, err, s)
			}
		}
	}
	// The error chain is kept.
	_, err := fetchVia(client, withCreds(notFound.URL, "/ctx.tar"), goodDigest, t.TempDir())
	var st *contextref.StatusError
	if !errors.As(err, &st) || st.Code != http.StatusNotFound || !strings.Contains(err.Error(), notFound.URL+"/ctx.tar") {
		t.Fatalf("404: %v, want a StatusError naming %s/ctx.tar", err, notFound.URL)
	}

	_, err = contextref.Parse(strings.NewReader(`{"url":"ftp://robot:hunter2@h/x?token=s3cr3t","digest":"` + goodDigest + `"}`))
	if !errors.Is(err, contextref.ErrInvalid) || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("Parse: %v", err)
	}
}

func TestSafeURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@r.example:5000/v2/x/blobs/sha256:ab?X-Amz-Signature=1#frag": "https://r.example:5000/v2/x/blobs/sha256:ab",
		"http://token@h/x":          "http://h/x",
		"http://h":                  "http://h",
		"http://h?q=1":              "http://h",
		"http://a@b@h/p@q":          "http://h/p@q",
		"not a url?secret=1":        "not a url",
		"https://h/path;params?x=y": "https://h/path;params",
	} {
		if got := contextref.SafeURL(in); got != want {
			t.Errorf("SafeURL(%q) = %q, want %q", in, got, want)
		}
	}
}
