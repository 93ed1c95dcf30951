// Package buildtar unpacks the tar of a verified build request: the build
// context goes to disk under a work directory, the build config and sealed
// secrets stay in memory. It refuses anything that could write outside the
// context or exhaust the disk, and leaves nothing behind when it fails.
package buildtar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Top-level names in a build tar (wire protocol 3.3).
const (
	ConfigName  = "com.openfaas.docker.config"
	SecretsName = "com.openfaas.secrets"
	ContextName = "context"
)

// Limits bound what one request may unpack. A zero or negative field means
// the DefaultLimits value, never "unlimited".
type Limits struct {
	MaxBytes        int64 // total file bytes in the context, as declared and as written
	MaxEntries      int   // tar entries of any kind
	MaxConfigBytes  int64
	MaxSecretsBytes int64
}

// DefaultLimits are generous for a function's source and far below what
// would hurt the builder's disk.
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

// Request is an unpacked build request.
type Request struct {
	Config        BuildConfig
	ContextDir    string // workDir/context
	SealedSecrets []byte // nil when the tar has no com.openfaas.secrets
}

// Error is a problem with the archive itself, i.e. the client's fault.
// Callers answer 413 when TooLarge is set and 400 otherwise. Any other error
// from Extract is the server's (disk, permissions).
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

// os.Root walks a path one component at a time, so very long or deep names
// cost a syscall per component per entry; real contexts are far below these.
const (
	maxNameLen = 4096
	maxDepth   = 256
)

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

// extractor writes context entries through an os.Root, so even a bug in the
// checks below cannot make a write land outside the context directory.
type extractor struct {
	root  *os.Root
	lim   Limits
	seen  map[string]kind // everything created, relative to the context
	bytes int64
	buf   []byte
}

// Extract reads the whole build tar from r. Context entries are written under
// workDir/context, which must not exist yet; the caller owns workDir and
// removes it when the build is done. On error workDir/context is removed.
func Extract(r io.Reader, workDir string, lim Limits) (_ *Request, err error) {
	lim = lim.withDefaults()
	ctxDir := filepath.Join(workDir, ContextName)
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		return nil, fmt.Errorf("create build context: %w", err)
	}
	root, err := os.OpenRoot(ctxDir)
	if err != nil {
		os.Remove(ctxDir)
		return nil, fmt.Errorf("open build context: %w", err)
	}
	defer func() {
		root.Close()
		if err != nil {
			if rmErr := os.RemoveAll(ctxDir); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("clean up build context: %w", rmErr))
			}
		}
	}()

	x := &extractor{root: root, lim: lim, seen: map[string]kind{}, buf: make([]byte, 64<<10)}
	req := &Request{ContextDir: ctxDir}
	haveConfig := false
	tr := tar.NewReader(r)
	for entries := 1; ; entries++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &Error{Reason: "read tar: " + err.Error(), Err: err}
		}
		if entries > lim.MaxEntries {
			return nil, &Error{Entry: hdr.Name, Reason: fmt.Sprintf("more than %d tar entries", lim.MaxEntries), TooLarge: true}
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // PAX defaults for the whole archive; nothing to unpack
		}

		name, ok := cleanName(hdr.Name)
		if !ok {
			return nil, &Error{Entry: hdr.Name, Reason: "path escapes the build context"}
		}
		switch {
		case name == "" || name == ContextName:
			// "./" from GNU tar, and the context directory we already made.
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
			if err := x.add(tr, hdr, name[len(ContextName)+1:]); err != nil {
				return nil, err
			}
		default:
			return nil, &Error{Entry: hdr.Name, Reason: "unexpected entry: only context/, " + ConfigName + " and " + SecretsName + " are allowed"}
		}
	}

	if !haveConfig {
		return nil, &Error{Entry: ConfigName, Reason: "missing build config"}
	}
	dockerfile := req.Config.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	if x.seen[dockerfile] != kindFile {
		return nil, &Error{Entry: ContextName + "/" + dockerfile, Reason: "Dockerfile is missing from the build context or is not a regular file"}
	}
	return req, nil
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

// add creates one context entry at rel (relative to the context directory).
func (x *extractor) add(tr io.Reader, hdr *tar.Header, rel string) error {
	fail := func(reason string) error { return &Error{Entry: hdr.Name, Reason: reason} }
	if len(rel) > maxNameLen || len(hdr.Linkname) > maxNameLen || strings.Count(rel, "/") >= maxDepth {
		return fail("path is too long or too deep")
	}

	if hdr.Typeflag == tar.TypeDir && x.seen[rel] == kindDir {
		return nil // already made as a parent of an earlier entry
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		return fail("device files are not allowed")
	case tar.TypeFifo:
		return fail("fifos are not allowed")
	default:
		return fail(fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
	}
	if _, dup := x.seen[rel]; dup {
		return fail("duplicate entry")
	}
	if reason, err := x.makeParents(rel); reason != "" || err != nil {
		if err != nil {
			return unpackErr(hdr, err)
		}
		return fail(reason)
	}

	var err error
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = x.root.Mkdir(rel, 0o755)
		x.seen[rel] = kindDir
	case tar.TypeSymlink:
		if !symlinkInside(rel, hdr.Linkname) {
			return fail("symlink target " + hdr.Linkname + " escapes the build context")
		}
		err = x.root.Symlink(hdr.Linkname, rel)
		x.seen[rel] = kindSymlink
	case tar.TypeLink:
		target, ok := cleanName(hdr.Linkname)
		rest, inContext := strings.CutPrefix(target, ContextName+"/")
		if !ok || !inContext {
			return fail("hard link target " + hdr.Linkname + " escapes the build context")
		}
		if x.seen[rest] != kindFile {
			return fail("hard link target " + hdr.Linkname + " is not a regular file earlier in the archive")
		}
		err = x.root.Link(rest, rel)
		x.seen[rel] = kindFile
	default: // regular file, possibly sparse
		if hdr.Size > x.lim.MaxBytes-x.bytes {
			return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("build context larger than %d bytes", x.lim.MaxBytes), TooLarge: true}
		}
		x.bytes += hdr.Size
		x.seen[rel] = kindFile
		return x.writeFile(tr, hdr, rel)
	}
	if err != nil {
		return unpackErr(hdr, err)
	}
	return nil
}

// unpackErr blames the archive for file system errors that its names cause,
// and the server for the rest (disk full, permissions).
func unpackErr(hdr *tar.Header, err error) error {
	switch {
	case errors.Is(err, syscall.ENAMETOOLONG):
		return &Error{Entry: hdr.Name, Reason: "name too long", Err: err}
	case errors.Is(err, os.ErrExist):
		// Names that differ only in case, on a case-insensitive file system.
		return &Error{Entry: hdr.Name, Reason: "duplicate entry", Err: err}
	}
	return fmt.Errorf("unpack %s: %w", hdr.Name, err)
}

// makeParents creates missing parent directories of rel. A parent that is a
// file or a symlink is refused: writing through a symlink is how archives
// escape their destination.
func (x *extractor) makeParents(rel string) (reason string, err error) {
	for i := 0; i < len(rel); i++ {
		if rel[i] != '/' {
			continue
		}
		parent := rel[:i]
		switch x.seen[parent] {
		case kindDir:
		case kindFile:
			return "parent " + parent + " is not a directory", nil
		case kindSymlink:
			return "path goes through symlink " + parent, nil
		default:
			if err := x.root.Mkdir(parent, 0o755); err != nil {
				return "", err
			}
			x.seen[parent] = kindDir
		}
	}
	return "", nil
}

// writeFile copies one regular file's data. Its permission bits are kept
// (the executable bit matters to COPY) but setuid, setgid and sticky are not.
func (x *extractor) writeFile(tr io.Reader, hdr *tar.Header, rel string) error {
	perm := os.FileMode(hdr.Mode & 0o777)
	f, err := x.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, perm)
	if err != nil {
		return unpackErr(hdr, err)
	}
	defer f.Close()

	var copied int64
	for {
		n, rerr := tr.Read(x.buf)
		// The declared size was already charged to the budget; this guards
		// against a reader that yields more than it declared.
		if copied += int64(n); copied > hdr.Size {
			return &Error{Entry: hdr.Name, Reason: "more data than the header declares", TooLarge: true}
		}
		if _, err := f.Write(x.buf[:n]); err != nil {
			return fmt.Errorf("unpack %s: %w", hdr.Name, err)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &Error{Entry: hdr.Name, Reason: "read tar: " + rerr.Error(), Err: rerr}
		}
	}
	// The umask may have dropped bits at create time.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("unpack %s: %w", hdr.Name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("unpack %s: %w", hdr.Name, err)
	}
	return nil
}

// symlinkInside reports whether a symlink at rel with this target resolves
// inside the context whatever other links the archive adds, before or after.
// Leading ".." steps climb out of rel's directory, whose components are real
// directories (makeParents guarantees it), so they are counted exactly. A
// ".." after a name is refused: that name may be, or later become, a symlink,
// and then ".." would climb from wherever the link points.
func symlinkInside(rel, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
		return false
	}
	depth := strings.Count(rel, "/")
	named := false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if named || depth == 0 {
				return false
			}
			depth--
		default:
			named = true
		}
	}
	return true
}
