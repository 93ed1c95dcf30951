// Package buildtar reads the tar of a verified build request without
// unpacking it: the build config and the sealed secrets are kept in
// memory, and the context is indexed where it lies in the tar so that
// BuildKit is served its files from the request's own bytes (FS). It
// refuses anything that could reach outside the context or exhaust the
// builder, and writes nothing anywhere.
package buildtar

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Top-level names in a build tar (wire protocol 3.3).
const (
	ConfigName  = "com.openfaas.docker.config"
	SecretsName = "com.openfaas.secrets"
	ContextName = "context"
)

// Limits bound what one request may hold. A zero or negative field means
// the DefaultLimits value, never "unlimited".
type Limits struct {
	MaxBytes int64 // total file bytes in the context, sparse files at their full size
	// MaxEntries counts tar entries of any kind and the directories their
	// paths imply without an entry of their own.
	MaxEntries      int
	MaxConfigBytes  int64
	MaxSecretsBytes int64
}

// DefaultLimits are generous for a function's source and far below what
// would hurt the builder.
func DefaultLimits() Limits {
	return Limits{
		MaxBytes:        512 << 20,
		MaxEntries:      100_000,
		MaxConfigBytes:  64 << 10,
		MaxSecretsBytes: 1 << 20,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxConfigBytes <= 0 {
		l.MaxConfigBytes = d.MaxConfigBytes
	}
	if l.MaxSecretsBytes <= 0 {
		l.MaxSecretsBytes = d.MaxSecretsBytes
	}
	return l
}

// Request is an indexed build request.
type Request struct {
	Config        BuildConfig
	Context       *Tree  // the context's entries; Serve them from the tar's bytes
	SealedSecrets []byte // nil when the tar has no com.openfaas.secrets
}

// Error is a problem with the archive itself, i.e. the client's fault.
// Callers answer 413 when TooLarge is set and 400 otherwise. The other
// errors of Index are its reader's or its context's.
type Error struct {
	Entry    string // name as it appears in the tar; empty when no entry applies
	Reason   string
	TooLarge bool
	Err      error // underlying cause, if any
}

func (e *Error) Error() string {
	if e.Entry == "" {
		return e.Reason
	}
	entry := e.Entry
	if len(entry) > 256 { // names can be up to 1 MiB in a PAX record
		entry = entry[:256] + "..."
	}
	return entry + ": " + e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

// Index reads a whole build tar from r and checks it as an unpack would:
// no path may leave the context, no link may point outside it, only
// directories, regular files and links, and everything within lim. The
// context's files are not copied anywhere: the Tree records where each
// one lies in the tar, so r must read the same bytes that Tree.Serve is
// later given, from their first byte. Cancelling ctx stops it between
// entries and within large files.
func Index(ctx context.Context, r io.Reader, lim Limits) (*Request, error) {
	lim = lim.withDefaults()
	in := &countingReader{r: r}
	tr := tar.NewReader(in)
	tree := newTree(lim)
	req := &Request{Context: tree}
	haveConfig := false
	buf := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Every entry before this one was read to its end, and headers
		// start on a 512-byte block of the archive.
		headerAt := (in.n + blockSize - 1) / blockSize * blockSize
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &Error{Reason: "read tar: " + err.Error(), Err: err}
		}
		if err := tree.count(hdr.Name); err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // PAX defaults for the whole archive; nothing to index
		}

		name, ok := cleanName(hdr.Name)
		if !ok {
			return nil, &Error{Entry: hdr.Name, Reason: "path escapes the build context"}
		}
		switch {
		case name == "" || name == ContextName:
			// "./" from GNU tar, and the context directory itself.
			if hdr.Typeflag != tar.TypeDir {
				return nil, &Error{Entry: hdr.Name, Reason: "must be a directory"}
			}
		case name == ConfigName:
			if haveConfig {
				return nil, &Error{Entry: hdr.Name, Reason: "duplicate entry"}
			}
			haveConfig = true
			data, err := readSmall(tr, hdr, lim.MaxConfigBytes)
			if err != nil {
				return nil, err
			}
			if req.Config, err = ParseConfig(data); err != nil {
				return nil, err
			}
		case name == SecretsName:
			if req.SealedSecrets != nil {
				return nil, &Error{Entry: hdr.Name, Reason: "duplicate entry"}
			}
			if req.SealedSecrets, err = readSmall(tr, hdr, lim.MaxSecretsBytes); err != nil {
				return nil, err
			}
		case strings.HasPrefix(name, ContextName+"/"):
			file, err := tree.add(hdr, name[len(ContextName)+1:])
			if err != nil {
				return nil, err
			}
			if file != noNode {
				if err := readFile(ctx, tr, in, hdr, &tree.nodes[file], headerAt, buf); err != nil {
					return nil, err
				}
			}
		default:
			return nil, &Error{Entry: hdr.Name, Reason: "unexpected entry: only context/, " + ConfigName + " and " + SecretsName + " are allowed"}
		}
		// What archive/tar would skip: keeps headerAt exact.
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{tr}, buf); err != nil {
			return nil, &Error{Entry: hdr.Name, Reason: "read tar: " + err.Error(), Err: err}
		}
	}

	if !haveConfig {
		return nil, &Error{Entry: ConfigName, Reason: "missing build config"}
	}
	dockerfile := req.Config.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	if !tree.isFile(dockerfile) {
		return nil, &Error{Entry: ContextName + "/" + dockerfile, Reason: "Dockerfile is missing from the build context or is not a regular file"}
	}
	tree.finish()
	return req, nil
}

const blockSize = 512

// cancelEvery is how many bytes of one file are read between two looks
// at the context.
const cancelEvery = 4 << 20

// readFile reads a context file's data once, to digest it and to learn
// whether the tar stores it as one run of bytes or sparse.
func readFile(ctx context.Context, tr io.Reader, in *countingReader, hdr *tar.Header, file *node, headerAt int64, buf []byte) error {
	start := in.n
	digest := xxhash.New()
	var read, sinceCheck int64
	for {
		n, err := tr.Read(buf)
		digest.Write(buf[:n])
		read += int64(n)
		if sinceCheck += int64(n); sinceCheck >= cancelEvery {
			sinceCheck = 0
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return &Error{Entry: hdr.Name, Reason: "read tar: " + err.Error(), Err: err}
		}
	}
	if read != hdr.Size { // archive/tar guarantees it; a mistake here would serve wrong bytes
		return fmt.Errorf("index %s: read %d bytes, header says %d", hdr.Name, read, hdr.Size)
	}
	file.mtime = contentTime(digest.Sum64())
	if in.n-start == hdr.Size {
		file.dataAt = start
	} else {
		// Holes: the bytes are not one run in the tar, so they are read
		// through archive/tar again from the entry's header.
		file.dataAt = -1
		file.headerAt = headerAt
	}
	return nil
}

// cleanName strips the "./" or "/" prefixes that GNU tar and others write and
// the trailing slash of directories. It refuses ".." anywhere, even where it
// would stay inside, because no honest client sends it.
func cleanName(name string) (string, bool) {
	n := name
	for {
		if s, ok := strings.CutPrefix(n, "./"); ok {
			n = s
		} else if s, ok := strings.CutPrefix(n, "/"); ok {
			n = s
		} else {
			break
		}
	}
	if n == "" || n == "." {
		return "", true
	}
	return contextPath(n)
}

// readSmall reads a config or secrets entry into memory.
func readSmall(tr io.Reader, hdr *tar.Header, max int64) ([]byte, error) {
	if hdr.Typeflag != tar.TypeReg {
		return nil, &Error{Entry: hdr.Name, Reason: "must be a regular file"}
	}
	if hdr.Size > max {
		return nil, &Error{Entry: hdr.Name, Reason: fmt.Sprintf("larger than %d bytes", max), TooLarge: true}
	}
	data := make([]byte, hdr.Size)
	if _, err := io.ReadFull(tr, data); err != nil {
		return nil, &Error{Entry: hdr.Name, Reason: "read tar: " + err.Error(), Err: err}
	}
	return data, nil
}

// countingReader knows how far into the archive archive/tar has read,
// which is where each entry's data starts once Next returns. It has no
// Seek, so archive/tar reads every byte through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
