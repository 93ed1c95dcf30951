// Package contextref fetches a build tar that was too big to travel in the
// request itself. The NATS queue behind /async-function carries at most
// 1 MB, so a platform uploads the tar elsewhere (an HTTP(S) URL, or a blob
// in an OCI registry) and sends a small signed reference that pins its
// sha256 digest. The signature covers the reference, the digest covers
// the bytes: a mismatch is refused.
package contextref

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// MediaType is the Content-Type that marks a request body as a Ref.
const MediaType = "application/vnd.fnbuilder.context-ref+json"

// Ref points at a build tar.
type Ref struct {
	URL    string `json:"url"`
	Digest string `json:"digest"` // sha256:<64 hex>
}

// ErrInvalid marks a malformed reference.
var ErrInvalid = errors.New("invalid context reference")

// ErrDigestMismatch means the fetched bytes are not the ones referenced.
var ErrDigestMismatch = errors.New("fetched context does not match its digest")

// TooLargeError means the referenced tar is over the size limit.
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("referenced context is larger than %d bytes", e.Limit)
}

// Parse decodes and checks a reference.
func Parse(r io.Reader) (Ref, error) {
	var ref Ref
	dec := json.NewDecoder(io.LimitReader(r, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ref); err != nil {
		return ref, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	u, err := url.Parse(ref.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ref, fmt.Errorf("%w: url %q must be an absolute http(s) URL", ErrInvalid, SafeURL(ref.URL))
	}
	hexDigest, ok := strings.CutPrefix(ref.Digest, "sha256:")
	// Lowercase only, as OCI digests are: Fetch compares the lowercase hex
	// of the bytes, so an uppercase digest could never match.
	if b, err := hex.DecodeString(hexDigest); !ok || err != nil || len(b) != sha256.Size || hexDigest != strings.ToLower(hexDigest) {
		return ref, fmt.Errorf("%w: digest %q must be sha256:<64 lowercase hex digits>", ErrInvalid, ref.Digest)
	}
	return ref, nil
}

// Fetched is a downloaded, digest-checked tar in a temp file.
type Fetched struct {
	file *os.File
	size int64
}

// Reader reads the tar from its start.
func (f *Fetched) Reader() io.Reader { return io.NewSectionReader(f.file, 0, f.size) }

// ReadAt reads the tar at off; it is safe for concurrent use.
func (f *Fetched) ReadAt(p []byte, off int64) (int, error) { return f.file.ReadAt(p, off) }

// Size is the tar's length in bytes.
func (f *Fetched) Size() int64 { return f.size }

// Close removes the temp file.
func (f *Fetched) Close() error {
	err := f.file.Close()
	if rerr := os.Remove(f.file.Name()); err == nil {
		err = rerr
	}
	return err
}

// Fetch downloads ref into dir with at most limit bytes and checks the
// digest. On error nothing is left in dir, and the error's text names no
// URL's userinfo or query. Give it a client from NewClient.
func Fetch(ctx context.Context, client *http.Client, ref Ref, dir string, limit int64) (_ *Fetched, err error) {
	defer func() { err = scrub(err) }()
	req, err := http.NewRequestWithContext(withOrigin(ctx, ref.URL), http.MethodGet, ref.URL, nil)
	if err != nil {
		return nil, err
	}
	// A registry serves a blob to this Accept; plain servers ignore it.
	req.Header.Set("Accept", "application/octet-stream, application/vnd.oci.image.layer.v1.tar")
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch context: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, &StatusError{Code: res.StatusCode, URL: SafeURL(ref.URL)}
	}
	if limit > 0 && res.ContentLength > limit {
		return nil, &TooLargeError{Limit: limit}
	}

	f, err := os.CreateTemp(dir, "context-*.tar")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	body := io.Reader(res.Body)
	if limit > 0 {
		body = io.LimitReader(res.Body, limit+1)
	}
	n, err := io.Copy(io.MultiWriter(f, h), body)
	if err != nil {
		return nil, fmt.Errorf("fetch context: %w", err)
	}
	if limit > 0 && n > limit {
		return nil, &TooLargeError{Limit: limit}
	}
	if "sha256:"+hex.EncodeToString(h.Sum(nil)) != ref.Digest {
		return nil, ErrDigestMismatch
	}
	return &Fetched{file: f, size: n}, nil
}

// StatusError is a non-200 answer from the context's server.
type StatusError struct {
	Code int
	URL  string // without userinfo or query (SafeURL)
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("fetch context: %s answered %d", e.URL, e.Code)
}

// Transient says whether a retry may succeed.
func (e *StatusError) Transient() bool { return e.Code >= 500 || e.Code == http.StatusTooManyRequests }
