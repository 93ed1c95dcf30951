package contextref

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// NewClient is the HTTP client Fetch should be given. The reference's own
// host may be anywhere (the platform signed it: an in-cluster registry is
// usual), but a redirect elsewhere may not reach a loopback, link-local
// (cloud metadata at 169.254.169.254), private, shared (CGNAT),
// unspecified, multicast or reserved address unless allowPrivateRedirects.
// The check is on the address actually dialled, after name resolution, so
// a name that resolves (or rebinds) to such an address is refused too.
//
// Connections are never reused: a kept connection to one reference's host
// would otherwise carry another reference's redirect past the check. For
// the same reason environment proxies are not used (the dialled address
// would be the proxy's).
func NewClient(timeout time.Duration, allowPrivateRedirects bool) *http.Client {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	guarded := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: refuseNonPublic}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				origin, _ := ctx.Value(originKey{}).(string)
				if allowPrivateRedirects || (origin != "" && strings.EqualFold(addr, origin)) {
					return dialer.DialContext(ctx, network, addr)
				}
				return guarded.DialContext(ctx, network, addr)
			},
			DisableKeepAlives:     true,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: time.Minute,
		},
	}
}

// originKey marks a fetch's context with the reference's host:port, the
// one address its signer vouches for.
type originKey struct{}

// withOrigin is ctx for fetching rawURL, host and port as net/http dials
// them.
func withOrigin(ctx context.Context, rawURL string) context.Context {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ctx
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return context.WithValue(ctx, originKey{}, net.JoinHostPort(u.Hostname(), port))
}

// AddressRefusedError means a redirect led to an address only the
// reference's own host may have.
type AddressRefusedError struct {
	Addr   netip.Addr
	Reason string
}

func (e *AddressRefusedError) Error() string {
	return fmt.Sprintf("a redirect leads to %s, a %s address, which only the reference's own host may be", e.Addr, e.Reason)
}

// refuseNonPublic is a net.Dialer Control: it runs for each address tried,
// after resolution and before connecting.
func refuseNonPublic(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %q: %w", address, err)
	}
	if reason := nonPublic(ap.Addr()); reason != "" {
		return &AddressRefusedError{Addr: ap.Addr().Unmap(), Reason: reason}
	}
	return nil
}

// reserved are the blocks netip has no predicate for.
var reserved = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (CGNAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // and 255.255.255.255
	{netip.MustParsePrefix("64:ff9b:1::/48"), "private (local NAT64)"},
}

// embeddedIPv4 are IPv6 blocks that carry an IPv4 address a gateway
// connects to: NAT64 and 6to4.
var embeddedIPv4 = []struct {
	prefix netip.Prefix
	at     int
}{
	{netip.MustParsePrefix("64:ff9b::/96"), 12},
	{netip.MustParsePrefix("2002::/16"), 2},
}

// nonPublic names the kind of a non-public address; "" for a public one.
func nonPublic(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsPrivate():
		return "private"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, r := range reserved {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	for _, e := range embeddedIPv4 {
		if e.prefix.Contains(ip) {
			b := ip.As16()
			if reason := nonPublic(netip.AddrFrom4([4]byte(b[e.at : e.at+4]))); reason != "" {
				return reason + " (inside " + e.prefix.String() + ")"
			}
		}
	}
	return ""
}

// urlPattern finds URLs in error texts (net/http quotes them).
var urlPattern = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`)

// SafeURL is rawURL without its userinfo, query and fragment: presigned
// URLs and basic-auth URLs carry credentials there.
func SafeURL(rawURL string) string {
	s, _, _ := strings.Cut(rawURL, "#")
	s, _, _ = strings.Cut(s, "?")
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = authority[i+1:]
	}
	return scheme + "://" + authority + path
}

// scrubbedError keeps err's chain for errors.Is/As, with every URL in its
// text made safe.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

func scrub(err error) error {
	if err == nil {
		return nil
	}
	// The chain too, for whoever digs the URL out of it.
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = SafeURL(ue.URL)
	}
	return &scrubbedError{msg: urlPattern.ReplaceAllStringFunc(err.Error(), SafeURL), err: err}
}
