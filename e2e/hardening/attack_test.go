package hardening

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// attack is one hostile request: its body (or a body generator, for
// bodies too large to hold), the status it must get and a text the JSON
// error must contain (the entry's name, or the limit it broke).
type attack struct {
	name string
	body []byte
	// gen writes the body; it is called twice (sign, then send), and must
	// write the same bytes both times.
	gen  func(w io.Writer) error
	code int
	msg  string
}

// TestAttacks sends hostile tars to build-fn over HTTP. Each must be
// refused with a 4xx and a JSON error naming the entry, before any
// BuildKit run, leaving work_dir empty and nothing outside it.
func TestAttacks(t *testing.T) {
	k := newKeys(t)
	b := startBuilder(t, k, map[string]string{
		// stack.yaml's build-fn timeouts are 31m; a 512 MB body of a
		// million entries needs more than the template's default 10 s.
		"read_timeout":  "2m",
		"write_timeout": "2m",
	})
	m := "pwned-" + testenv.RandomHex(t, 6) // the name every escape tries to create
	dockerfile := testenv.File("context/Dockerfile", "FROM scratch\n")
	cfg := testenv.ConfigEntry(t, map[string]any{"image": "127.0.0.1:1/attack:1"})
	hostile := func(entries ...testenv.TarEntry) []byte {
		all := append([]testenv.TarEntry{testenv.Dir("context/"), dockerfile}, entries...)
		return testenv.BuildTar(t, append(all, cfg)...)
	}

	many := unterminated(t, testenv.Dir("context/"), dockerfile, testenv.ConfigEntry(t, map[string]any{"image": "127.0.0.1:1/many:1"}))
	truncated := hostile(testenv.File("context/big", strings.Repeat("B", 4096)))
	bigAt := bytes.Index(truncated, []byte("context/big"))
	longName := "context/" + strings.Repeat("n", 90) + "/../../../" + m
	gnuLong := testenv.BuildTar(t, testenv.Dir("context/"), dockerfile,
		testenv.TarEntry{Header: tar.Header{Name: longName, Mode: 0o644, Size: 1, Typeflag: tar.TypeReg, Format: tar.FormatGNU}, Body: "x"}, cfg)
	if !bytes.Contains(gnuLong, []byte("././@LongLink")) {
		t.Fatal("the GNU long-name case has no ././@LongLink entry")
	}

	cases := []attack{
		{name: "../", body: hostile(testenv.File("../"+m, "x")), code: 400, msg: "../" + m},
		{name: "context/../../x", body: hostile(testenv.File("context/../../"+m, "x")), code: 400, msg: "context/../../" + m},
		{name: "deep ../ to /tmp", body: hostile(testenv.File("context/"+strings.Repeat("../", 16)+"tmp/"+m, "x")), code: 400, msg: "tmp/" + m},
		{name: "absolute path", body: hostile(testenv.File("/tmp/"+m, "x")), code: 400, msg: "/tmp/" + m},
		{name: "absolute path into context", body: hostile(testenv.File("/context/../../tmp/"+m, "x")), code: 400, msg: "/context/../../tmp/" + m},
		{name: "symlink to absolute path", body: hostile(testenv.Symlink("context/abs", "/tmp"), testenv.File("context/abs/"+m, "x")), code: 400, msg: "context/abs"},
		{name: "symlink ../../", body: hostile(testenv.Symlink("context/up", "../../"), testenv.File("context/up/"+m, "x")), code: 400, msg: "context/up"},
		{name: "symlink climbing after a name", body: hostile(testenv.Dir("context/d"), testenv.Symlink("context/d/l", "x/../../..")), code: 400, msg: "context/d/l"},
		{name: "write through symlink", body: hostile(testenv.Dir("context/d"), testenv.Symlink("context/ln", "d"), testenv.File("context/ln/"+m, "x")), code: 400, msg: "context/ln/" + m},
		{name: "write through symlink to .", body: hostile(testenv.Symlink("context/dot", "."), testenv.File("context/dot/"+m, "x")), code: 400, msg: "context/dot/" + m},
		{name: "hardlink to /etc/passwd", body: hostile(testenv.Hardlink("context/pw", "/etc/passwd")), code: 400, msg: "context/pw"},
		{name: "hardlink escape", body: hostile(testenv.Hardlink("context/h", "context/../../"+m)), code: 400, msg: "context/h"},
		{name: "hardlink through symlink", body: hostile(testenv.Symlink("context/s", "."), testenv.Hardlink("context/h", "context/s/Dockerfile")), code: 400, msg: "context/h"},
		{name: "hardlink outside context/", body: hostile(testenv.Hardlink("context/h", "com.openfaas.docker.config")), code: 400, msg: "context/h"},
		{name: "char device", body: hostile(special("context/null", tar.TypeChar)), code: 400, msg: "context/null"},
		{name: "block device", body: hostile(special("context/sda", tar.TypeBlock)), code: 400, msg: "context/sda"},
		{name: "fifo", body: hostile(special("context/fifo", tar.TypeFifo)), code: 400, msg: "context/fifo"},
		{name: "duplicate entries", body: hostile(testenv.File("context/a", "1"), testenv.File("context/a", "2")), code: 400, msg: "context/a: duplicate"},
		{name: "symlink then file of the same name", body: hostile(testenv.Symlink("context/a", "Dockerfile"), testenv.File("context/a", "2")), code: 400, msg: "context/a: duplicate"},
		{name: "duplicate config", body: hostile(cfg), code: 400, msg: "com.openfaas.docker.config: duplicate"},
		{name: "huge declared size", body: hugeHeader(t), code: 413, msg: "context/huge"},
		{name: "huge sparse file", body: gnuSparse(t, dockerfile, cfg), code: 413, msg: "context/sparse"},
		{name: "a million tiny entries", gen: func(w io.Writer) error { return millionEntries(w, many, 1_000_000) }, code: 413, msg: "more than 100000 tar entries"},
		{name: "truncated tar", body: truncated[:bigAt+512+1000], code: 400, msg: "context/big"},
		{name: "truncated header", body: truncated[:bigAt+100], code: 400, msg: "read tar"},
		{name: "GNU long name with ..", body: gnuLong, code: 400, msg: longName},
		{name: "PAX path override with ..", body: paxOverride(t, "path", "context/../../"+m, dockerfile, cfg), code: 400, msg: "context/../../" + m},
		{name: "oversized PAX header", body: paxRaw(t, "comment", strings.Repeat("c", 2<<20), dockerfile, cfg), code: 400, msg: "read tar"},
		{name: "context/ itself a symlink to /", body: testenv.BuildTar(t, testenv.Symlink("context", "/"), dockerfile, cfg), code: 400, msg: "context: must be a directory"},
		{name: "deep nesting", body: hostile(testenv.File("context/"+strings.Repeat("d/", 300)+"f", "x")), code: 400, msg: "too deep"},
		{name: "config as a hardlink to /etc/passwd", body: testenv.BuildTar(t, testenv.Dir("context/"), dockerfile, testenv.Hardlink("com.openfaas.docker.config", "/etc/passwd")), code: 400, msg: "com.openfaas.docker.config: must be a regular file"},
		{name: "secrets as a symlink to /etc/shadow", body: hostile(testenv.Symlink("com.openfaas.secrets", "/etc/shadow")), code: 400, msg: "com.openfaas.secrets: must be a regular file"},
		{name: "config dockerfile ../../etc/passwd", body: testenv.BuildTar(t, testenv.Dir("context/"), dockerfile, testenv.ConfigEntry(t, map[string]any{"image": "127.0.0.1:1/a:1", "dockerfile": "../../etc/passwd"})), code: 400, msg: "com.openfaas.docker.config"},
		{name: "config dockerfile /etc/passwd", body: testenv.BuildTar(t, testenv.Dir("context/"), dockerfile, testenv.ConfigEntry(t, map[string]any{"image": "127.0.0.1:1/a:1", "dockerfile": "/etc/passwd"})), code: 400, msg: "com.openfaas.docker.config"},
		{name: "Dockerfile as a symlink to /etc/passwd", body: testenv.BuildTar(t, testenv.Dir("context/"), testenv.Symlink("context/Dockerfile", "/etc/passwd"), cfg), code: 400, msg: "context/Dockerfile"},
		{name: "Dockerfile as a symlink inside", body: testenv.BuildTar(t, testenv.Dir("context/"), testenv.File("context/real", "FROM scratch\n"), testenv.Symlink("context/Dockerfile", "real"), cfg), code: 400, msg: "context/Dockerfile"},
		{name: "not a tar (gzip)", body: []byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + strings.Repeat("\x00", 600)), code: 400, msg: "read tar"},
		{name: "empty body", body: []byte{}, code: 400, msg: "com.openfaas.docker.config"},
		{name: "PAX linkpath override to /", body: paxOverride(t, "linkpath", "/", dockerfile, cfg), code: 400, msg: "context/innocent"},
	}

	passwd := statOf(t, "/etc/passwd")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := listTree(t, b.parent)
			runs := b.Runs.Load()
			res := b.send(t, c)
			if testenv.Status(res) != c.code {
				body, _ := io.ReadAll(res.Body)
				t.Fatalf("status %d, want %d: %s", testenv.Status(res), c.code, body)
			}
			msg := errorBody(t, res)
			if !strings.Contains(msg, c.msg) {
				t.Fatalf("error %q does not name %q", msg, c.msg)
			}
			t.Logf("%d %s", testenv.Status(res), msg)
			if b.Runs.Load() != runs {
				t.Fatal("a refused request reached BuildKit")
			}
			b.waitWorkDirEmpty(t)
			if after := listTree(t, b.parent); after != before {
				t.Fatalf("the tree around work_dir changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			noEscape(t, b, m)
		})
	}
	if got := statOf(t, "/etc/passwd"); got != passwd {
		t.Fatalf("/etc/passwd changed: %s -> %s", passwd, got)
	}
}

// send posts an attack, signed: hostile bodies are signed by the real key,
// since an attacker that holds it is the case worth testing.
func (b *builder) send(t *testing.T, c attack) *http.Response {
	t.Helper()
	if c.gen == nil {
		return testenv.Post(t, b.url+"/build", c.body, testenv.SignedHeader(b.keys.payload, c.body, true))
	}
	signer := testenv.NewSigner(b.keys.payload)
	if err := c.gen(signer); err != nil {
		t.Fatal(err)
	}
	h := testenv.SignedHeader(b.keys.payload, nil, true)
	h.Set("X-Build-Signature", signer.Signature())
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(c.gen(pw)) }()
	return testenv.PostContext(t, context.Background(), b.url+"/build", pr, h)
}

// noEscape looks for the marker next to every ancestor of work_dir, in
// /tmp and $TMPDIR, and anywhere under the builder's directories.
func noEscape(t *testing.T, b *builder, marker string) {
	t.Helper()
	places := []string{"/tmp", os.TempDir(), "/"}
	for d := filepath.Join(b.workDir, "build-x", "context"); ; d = filepath.Dir(d) {
		places = append(places, d)
		if d == "/" {
			break
		}
	}
	if wd, err := os.Getwd(); err == nil {
		places = append(places, wd)
	}
	for _, p := range places {
		if _, err := os.Lstat(filepath.Join(p, marker)); err == nil {
			t.Fatalf("%s was written", filepath.Join(p, marker))
		}
	}
	_ = filepath.WalkDir(b.parent, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), marker) {
			t.Fatalf("%s was written", p)
		}
		return nil
	})
}

// listTree is every path under root with its type and size.
func listTree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		size := info.Size()
		if d.IsDir() {
			size = 0
		}
		fmt.Fprintf(&b, "%s %s %d\n", strings.TrimPrefix(p, root), info.Mode().Type(), size)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func statOf(t *testing.T, p string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("nlink=%d size=%d mtime=%d.%d", st.Nlink, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
}

// unterminated is a tar without the two zero blocks that end an archive,
// for a test that appends what archive/tar would refuse.
func unterminated(t *testing.T, entries ...testenv.TarEntry) []byte {
	t.Helper()
	b := testenv.BuildTar(t, entries...)
	return b[:len(b)-1024]
}

// hugeHeader declares a 1 TiB regular file and then ends: the builder must
// refuse it from the header alone.
func hugeHeader(t *testing.T) []byte {
	t.Helper()
	out := unterminated(t, testenv.Dir("context/"), testenv.File("context/Dockerfile", "FROM scratch\n"))
	out = append(out, testenv.HeaderBlocks(t, tar.Header{Name: "context/huge", Mode: 0o644, Size: 1 << 40, Typeflag: tar.TypeReg})...)
	return append(out, bytes.Repeat([]byte{'h'}, 4096)...)
}

// gnuSparse is an old-GNU sparse file whose logical size is 1 TiB and
// whose archive holds 512 bytes of it: a sparse bomb.
func gnuSparse(t *testing.T, before, after testenv.TarEntry) []byte {
	t.Helper()
	sparse := testenv.GNUSparse(t, "context/sparse", 1<<40, testenv.SparseRun{At: 1<<40 - 512, Data: strings.Repeat("S", 512)})
	out := testenv.BuildTar(t, testenv.Dir("context/"), before, sparse, after)
	// The Go reader (which build-fn uses) must see the 1 TiB size.
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		hd, err := tr.Next()
		if err != nil {
			t.Fatalf("sparse case does not parse as intended: %v", err)
		}
		if hd.Name == "context/sparse" {
			if hd.Size != 1<<40 || hd.Typeflag != tar.TypeGNUSparse {
				t.Fatalf("sparse case parses as %q size %d", hd.Typeflag, hd.Size)
			}
			break
		}
	}
	return out
}

// paxOverride puts a PAX extended header before a harmless-looking entry,
// whose record (path or linkpath) replaces the name the ustar header shows.
func paxOverride(t *testing.T, key, value string, before, after testenv.TarEntry) []byte {
	t.Helper()
	raw := paxRaw(t, key, value, before, after)
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		hd, err := tr.Next()
		if err != nil {
			t.Fatalf("PAX case does not parse as intended: %v", err)
		}
		if key == "path" && hd.Name == value || key == "linkpath" && hd.Linkname == value {
			return raw
		}
		if hd.Name == "context/innocent" {
			t.Fatalf("PAX %s record ignored: %+v", key, hd)
		}
	}
}

// paxRaw writes a PAX extended header with one record before
// context/innocent (a symlink for linkpath, else a file), unchecked.
func paxRaw(t *testing.T, key, value string, before, after testenv.TarEntry) []byte {
	t.Helper()
	inner := testenv.File("context/innocent", "x")
	if key == "linkpath" {
		inner = testenv.Symlink("context/innocent", "innocent-target")
	}
	// Written as a regular file "PaxHeaders/innocent", then retyped 'x'.
	raw := testenv.BuildTar(t, testenv.Dir("context/"), before, testenv.File("PaxHeaders/innocent", paxRecord(key, value)), inner, after)
	at := bytes.Index(raw, []byte("PaxHeaders/innocent"))
	raw[at+156] = tar.TypeXHeader
	testenv.TarChecksum(raw[at : at+512])
	return raw
}

// millionEntries streams a valid request (head, unterminated) followed by
// n empty files.
func millionEntries(w io.Writer, head []byte, n int) error {
	if _, err := w.Write(head); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	hdr := &tar.Header{Mode: 0o644, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
	for i := range n {
		hdr.Name = fmt.Sprintf("context/f%07d", i)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	return tw.Close()
}

// paxRecord is "<length> key=value\n", the length counting itself (as
// archive/tar formats it).
func paxRecord(k, v string) string {
	size := len(k) + len(v) + 3
	size += len(fmt.Sprint(size))
	rec := fmt.Sprintf("%d %s=%s\n", size, k, v)
	if len(rec) != size {
		size = len(rec)
		rec = fmt.Sprintf("%d %s=%s\n", size, k, v)
	}
	return rec
}
