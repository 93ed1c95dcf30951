package buildtar

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tonistiigi/fsutil"
	"github.com/tonistiigi/fsutil/types"
	"golang.org/x/sync/errgroup"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// vectors is the shared folder of captures from the real clients.
const vectors = "../../../shared/vectors"

const (
	goodConfig = `{"image":"example.com/fn:latest"}`
	dockerfile = "FROM scratch\nCOPY . /\n"
)

// Short names for the shared tar kit (internal/testenv), for the tables.
type entry = testenv.TarEntry

var (
	file     = testenv.File
	dir      = testenv.Dir
	symlink  = testenv.Symlink
	hardlink = testenv.Hardlink
)

// at gives every entry the client mtime t.
func at(t time.Time, entries ...entry) []entry {
	for i := range entries {
		entries[i].Header.ModTime = t
	}
	return entries
}

// special is an entry of type typ without data: a device or a FIFO.
func special(name string, typ byte) entry {
	return entry{Header: tar.Header{Name: name, Typeflag: typ, Mode: 0o644}}
}

// withMode is e with its permission bits set to mode.
func withMode(e entry, mode int64) entry {
	e.Header.Mode = mode
	return e
}

// minimal is the smallest valid request: config plus a Dockerfile.
func minimal() []entry {
	return []entry{dir("context"), file("context/Dockerfile", dockerfile), file(ConfigName, goodConfig)}
}

// hugeHeader is a tar whose only file claims 1 TiB and carries no data.
func hugeHeader(t testing.TB) []byte {
	return testenv.HeaderBlocks(t, tar.Header{Name: "context/huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
}

// index runs Index over data and serves the result from the same bytes.
func index(t testing.TB, data []byte, lim Limits) (*Request, *FS, error) {
	t.Helper()
	req, err := Index(context.Background(), bytes.NewReader(data), lim)
	if err != nil {
		return req, nil, err
	}
	return req, req.Context.Serve(bytes.NewReader(data)), nil
}

func TestIndexRefuses(t *testing.T) {
	small := Limits{MaxBytes: 100, MaxEntries: 10, MaxConfigBytes: 64, MaxSecretsBytes: 16}
	ok := minimal()
	with := func(extra ...entry) []byte { return testenv.BuildTar(t, append(minimal(), extra...)...) }
	withFirst := func(extra ...entry) []byte { return testenv.BuildTar(t, append(extra, minimal()...)...) }
	full := testenv.BuildTar(t, ok...)

	outside := t.TempDir() // an absolute directory

	tests := []struct {
		name     string
		tar      []byte
		lim      Limits
		entry    string // must be Error.Entry and appear in the message
		reason   string // substring of the reason
		tooLarge bool
	}{
		{"dot-dot", with(file("../x", "x")), small, "../x", "escapes", false},
		{"dot-dot inside context", with(file("context/../../x", "x")), small, "context/../../x", "escapes", false},
		{"dot-dot that stays inside", with(file("context/sub/../x", "x")), small, "context/sub/../x", "escapes", false},
		{"absolute outside context", with(file("/etc/passwd", "x")), small, "/etc/passwd", "unexpected entry", false},
		{"unknown top-level", with(file("README.md", "x")), small, "README.md", "unexpected entry", false},
		{"symlink to /etc", with(symlink("context/etc", "/etc")), small, "context/etc", "escapes", false},
		{"symlink ..", with(symlink("context/up", "..")), small, "context/up", "escapes", false},
		{"symlink ../..", with(symlink("context/up", "../..")), small, "context/up", "escapes", false},
		{"nested symlink climbs out", with(dir("context/sub"), symlink("context/sub/l", "../../x")), small, "context/sub/l", "escapes", false},
		{"symlink .. after a link", with(dir("context/sub"), symlink("context/a", "sub"), symlink("context/b", "a/..")), small, "context/b", "escapes", false},
		{"symlink .. after a later link", with(symlink("context/b", "a/../.."), dir("context/a")), small, "context/b", "escapes", false},
		{"symlink empty target", with(symlink("context/e", "")), small, "context/e", "escapes", false},
		{"write through absolute symlink", with(symlink("context/link", outside), file("context/link/evil", "x")), small, "context/link", "escapes", false},
		{"write through inner symlink", with(dir("context/sub"), symlink("context/link", "sub"), file("context/link/evil", "x")), small, "context/link/evil", "through symlink", false},
		{"parent is a file", with(file("context/f", "x"), file("context/f/x", "x")), small, "context/f/x", "not a directory", false},
		{"hardlink outside", with(hardlink("context/h", "/etc/passwd")), small, "context/h", "escapes", false},
		{"hardlink dot-dot", with(hardlink("context/h", "context/../../etc/passwd")), small, "context/h", "escapes", false},
		{"hardlink to config", with(hardlink("context/h", ConfigName)), small, "context/h", "escapes", false},
		{"hardlink to missing entry", with(hardlink("context/h", "context/nope")), small, "context/h", "not a regular file", false},
		{"hardlink to symlink", with(symlink("context/s", "Dockerfile"), hardlink("context/h", "context/s")), small, "context/h", "not a regular file", false},
		{"char device", with(special("context/null", tar.TypeChar)), small, "context/null", "device", false},
		{"block device", with(special("context/sda", tar.TypeBlock)), small, "context/sda", "device", false},
		{"fifo", with(special("context/pipe", tar.TypeFifo)), small, "context/pipe", "fifo", false},
		{"name component too long", with(file("context/"+strings.Repeat("n", 300), "x")), small, "context/" + strings.Repeat("n", 300), "name too long", false},
		{"path too deep", with(file("context/"+strings.Repeat("d/", 300)+"f", "x")), small, "context/" + strings.Repeat("d/", 300) + "f", "too deep", false},
		{"duplicate file", with(file("context/Dockerfile", "FROM evil")), small, "context/Dockerfile", "duplicate entry", false},
		{"file over directory", with(dir("context/d"), file("context/d", "x")), small, "context/d", "duplicate entry", false},
		{"symlink over file", with(symlink("context/Dockerfile", "x")), small, "context/Dockerfile", "duplicate entry", false},
		{"duplicate config", with(file(ConfigName, goodConfig)), small, ConfigName, "duplicate entry", false},
		{"duplicate secrets", with(file(SecretsName, "a"), file("./"+SecretsName, "b")), small, "./" + SecretsName, "duplicate entry", false},
		{"config is a directory", withFirst(dir(ConfigName)), small, ConfigName, "regular file", false},
		{"context is a file", testenv.BuildTar(t, file("context", "x"), file(ConfigName, goodConfig)), small, "context", "must be a directory", false},
		{"context is a symlink", testenv.BuildTar(t, symlink("context", "/"), file(ConfigName, goodConfig)), small, "context", "must be a directory", false},
		{"root is a file", withFirst(file(".", "x")), small, ".", "must be a directory", false},
		{"too many entries", with(file("context/a", "1"), file("context/b", "2")), Limits{MaxEntries: 4}, "context/b", "entries", true},
		{"implied directories count as entries", with(file("context/a/b/c", "1")), Limits{MaxEntries: 5}, "context/a/b/c", "entries", true},
		{"sparse file charged its full size", with(testenv.GNUSparse(t, "context/holes", 1<<40, testenv.SparseRun{At: 0, Data: "data"})), small, "context/holes", "larger than", true},
		{"sparse file over the limit", with(testenv.GNUSparse(t, "context/holes", 101, testenv.SparseRun{At: 0, Data: "d"}, testenv.SparseRun{At: 100, Data: "d"})), small, "context/holes", "larger than", true},
		{"too many bytes", with(file("context/a", strings.Repeat("a", 60)), file("context/b", strings.Repeat("b", 60))), small, "context/b", "larger than", true},
		{"huge declared size", append(testenv.BuildTar(t, ok...)[:len(full)-1024], hugeHeader(t)...), small, "context/huge", "larger than", true},
		{"config too large", testenv.BuildTar(t, file(ConfigName, `{"image":"`+strings.Repeat("x", 100)+`"}`)), small, ConfigName, "larger than", true},
		{"secrets too large", with(file(SecretsName, strings.Repeat("s", 17))), small, SecretsName, "larger than", true},
		{"truncated data", with(file("context/big", strings.Repeat("z", 5000)))[:len(full)+2048], Limits{}, "context/big", "unexpected EOF", false},
		{"bad config JSON", withFirst(file(ConfigName, `{"image":`)), small, ConfigName, "invalid JSON", false},
		{"config without image", testenv.BuildTar(t, file(ConfigName, `{"platforms":["linux/amd64"]}`)), small, ConfigName, "image", false},
		{"config with empty image", testenv.BuildTar(t, file(ConfigName, `{"image":"  "}`)), small, ConfigName, "image", false},
		{"config dockerfile escapes", testenv.BuildTar(t, file(ConfigName, `{"image":"x","dockerfile":"../Dockerfile"}`)), small, ConfigName, "dockerfile", false},
		{"config dockerfile absolute", testenv.BuildTar(t, file(ConfigName, `{"image":"x","dockerfile":"/Dockerfile"}`)), small, ConfigName, "dockerfile", false},
		{"missing config", testenv.BuildTar(t, dir("context"), file("context/Dockerfile", dockerfile)), small, ConfigName, "missing", false},
		{"empty archive", nil, small, ConfigName, "missing", false},
		{"missing Dockerfile", testenv.BuildTar(t, dir("context"), file("context/hello.txt", "hi"), file(ConfigName, goodConfig)), small, "context/Dockerfile", "missing", false},
		{"missing context", testenv.BuildTar(t, file(ConfigName, goodConfig)), small, "context/Dockerfile", "missing", false},
		{"Dockerfile is a symlink", testenv.BuildTar(t, file("context/real", dockerfile), symlink("context/Dockerfile", "real"), file(ConfigName, goodConfig)), small, "context/Dockerfile", "not a regular file", false},
		{"configured Dockerfile missing", testenv.BuildTar(t, file("context/Dockerfile", dockerfile), file(ConfigName, `{"image":"x","dockerfile":"build/Dockerfile"}`)), small, "context/build/Dockerfile", "missing", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _, err := index(t, tc.tar, tc.lim)
			if req != nil {
				t.Errorf("got a request on error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v (%T), want *Error", err, err)
			}
			if e.Entry != tc.entry || !strings.Contains(e.Error(), tc.entry[:min(len(tc.entry), 256)]) {
				t.Errorf("entry %q, message %q: want entry %q", e.Entry, e.Error(), tc.entry)
			}
			if !strings.Contains(e.Reason, tc.reason) {
				t.Errorf("reason %q does not mention %q", e.Reason, tc.reason)
			}
			if e.TooLarge != tc.tooLarge {
				t.Errorf("TooLarge = %v, want %v", e.TooLarge, tc.tooLarge)
			}
		})
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("something was written outside: %v", entries)
	}
}

func TestIndexTruncatedHeader(t *testing.T) {
	data := testenv.BuildTar(t, minimal()...)
	_, _, err := index(t, data[:512+100], Limits{})
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want *Error wrapping io.ErrUnexpectedEOF", err)
	}
}

func TestIndexAccepts(t *testing.T) {
	longName := "context/" + strings.Repeat("d", 120) + "/" + strings.Repeat("f", 120)
	tests := []struct {
		name  string
		tar   []byte
		check func(t *testing.T, req *Request, f *FS)
	}{
		{"absolute names are stripped", testenv.BuildTar(t, file("/context/Dockerfile", dockerfile), file("/"+ConfigName, goodConfig)), nil},
		{"parents made implicitly", testenv.BuildTar(t, file("context/a/b/c.txt", "c"), file("context/Dockerfile", dockerfile), file(ConfigName, goodConfig)),
			func(t *testing.T, _ *Request, f *FS) {
				wantFile(t, f, "a/b/c.txt", "c", 0o644)
				if st := statOf(t, f, "a/b"); st == nil || st.Mode != uint32(os.ModeDir|0o755) {
					t.Errorf("implied directory a/b: %+v", st)
				}
			}},
		{"modes kept without setuid", testenv.BuildTar(t, withMode(file("context/run.sh", "#!/bin/sh"), 0o4755), withMode(file("context/Dockerfile", dockerfile), 0o600), file(ConfigName, goodConfig)),
			func(t *testing.T, _ *Request, f *FS) {
				wantFile(t, f, "run.sh", "#!/bin/sh", 0o755)
				wantFile(t, f, "Dockerfile", dockerfile, 0o600)
			}},
		{"links inside the context", testenv.BuildTar(t, dir("context/sub"), file("context/Dockerfile", dockerfile), symlink("context/sub/up", "../Dockerfile"), symlink("context/self", "."), symlink("context/dangling", "sub/nothing"), hardlink("context/sub/copy", "./context/Dockerfile"), file(ConfigName, goodConfig)),
			func(t *testing.T, _ *Request, f *FS) {
				wantFile(t, f, "sub/copy", dockerfile, 0o644)
				for link, target := range map[string]string{"sub/up": "../Dockerfile", "self": ".", "dangling": "sub/nothing"} {
					if st := statOf(t, f, link); st == nil || st.Linkname != target || os.FileMode(st.Mode)&os.ModeSymlink == 0 {
						t.Errorf("symlink %s: %+v", link, st)
					}
				}
				// The first name a walk meets is the file, the other a
				// hard link to it, as fsutil reports an inode.
				if st := statOf(t, f, "sub/copy"); st.Linkname != "" || st.Size != int64(len(dockerfile)) {
					t.Errorf("sub/copy walked alone: %+v", st)
				}
				stats := walkAll(t, f)
				if st := stats["sub/copy"]; st.Linkname != "Dockerfile" || st.Size != int64(len(dockerfile)) {
					t.Errorf("sub/copy in a whole walk: %+v", st)
				}
			}},
		{"PAX global header and long names", func() []byte {
			global := entry{Header: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "hi"}}}
			entries := []entry{global, file(longName, "long"), file("context/Dockerfile", dockerfile), file(ConfigName, goodConfig)}
			for i := range entries[1:] {
				entries[i+1].Header.Format = tar.FormatGNU
			}
			return testenv.BuildTar(t, entries...)
		}(), func(t *testing.T, _ *Request, f *FS) {
			wantFile(t, f, strings.TrimPrefix(longName, "context/"), "long", 0o644)
		}},
		{"configured Dockerfile", testenv.BuildTar(t, file("./context/build/Dockerfile.prod", dockerfile), file(ConfigName, `{"image":"x","dockerfile":"./build//Dockerfile.prod"}`)),
			func(t *testing.T, req *Request, f *FS) {
				if req.Config.Dockerfile != "build/Dockerfile.prod" {
					t.Errorf("Dockerfile = %q", req.Config.Dockerfile)
				}
				sub, err := f.Sub("build")
				if err != nil {
					t.Fatal(err)
				}
				wantFile(t, sub.(*FS), "Dockerfile.prod", dockerfile, 0o644)
			}},
		{"platforms [\"\"] means default", testenv.BuildTar(t, file("context/Dockerfile", dockerfile), file(ConfigName, `{"image":"x","platforms":[""]}`)),
			func(t *testing.T, req *Request, _ *FS) {
				if req.Config.Platforms != nil {
					t.Errorf("Platforms = %q, want none", req.Config.Platforms)
				}
			}},
		{"secrets kept out of the context", testenv.BuildTar(t, file(SecretsName, "sealed"), file("context/Dockerfile", dockerfile), file(ConfigName, goodConfig)),
			func(t *testing.T, req *Request, f *FS) {
				if string(req.SealedSecrets) != "sealed" {
					t.Errorf("SealedSecrets = %q", req.SealedSecrets)
				}
				if got := walkAll(t, f); len(got) != 1 {
					t.Errorf("the context holds %v, want only the Dockerfile", got)
				}
			}},
		{"sparse file with holes", testenv.BuildTar(t, file("context/Dockerfile", dockerfile), testenv.GNUSparse(t, "context/holes", 3<<20, testenv.SparseRun{At: 0, Data: "head"}, testenv.SparseRun{At: 2 << 20, Data: "middle"}), file(ConfigName, goodConfig)),
			func(t *testing.T, _ *Request, f *FS) {
				want := make([]byte, 3<<20)
				copy(want, "head")
				copy(want[2<<20:], "middle")
				wantFile(t, f, "holes", string(want), 0o644)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, f, err := index(t, tc.tar, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if req.Config.Dockerfile == "" {
				wantFile(t, f, "Dockerfile", dockerfile, -1)
			}
			if tc.check != nil {
				tc.check(t, req, f)
			}
		})
	}
}

// readServed is the content f serves for rel; ok is false (and the test
// marked failed) when it cannot be read.
func readServed(t *testing.T, f *FS, rel string) ([]byte, bool) {
	t.Helper()
	r, err := f.Open(rel)
	if err != nil {
		t.Error(err)
		return nil, false
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Error(err)
		return nil, false
	}
	return b, true
}

// wantFile checks content and, unless perm < 0, the permission bits.
func wantFile(t *testing.T, f *FS, rel, content string, perm int) {
	t.Helper()
	got, ok := readServed(t, f, rel)
	if !ok {
		return
	}
	if string(got) != content {
		t.Errorf("%s = %.40q (%d bytes), want %.40q (%d bytes)", rel, got, len(got), content, len(content))
	}
	st := statOf(t, f, rel)
	if st == nil || st.Size != int64(len(content)) {
		t.Errorf("%s stat %+v, want size %d", rel, st, len(content))
	}
	if perm >= 0 && st != nil && os.FileMode(st.Mode) != os.FileMode(perm) {
		t.Errorf("%s mode = %v, want %v", rel, os.FileMode(st.Mode), os.FileMode(perm))
	}
}

// statOf is what a walk of rel alone reports for it; nil when absent.
func statOf(t *testing.T, f fsutil.FS, rel string) *types.Stat {
	t.Helper()
	var out *types.Stat
	err := f.Walk(context.Background(), rel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == rel {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			out = fi.Sys().(*types.Stat)
		}
		return filepath.SkipDir
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// walkAll is every path a whole walk reports, with its stat.
func walkAll(t *testing.T, f fsutil.FS) map[string]*types.Stat {
	t.Helper()
	out := map[string]*types.Stat{}
	err := f.Walk(context.Background(), "/", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fi.Sys().(*types.Stat)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// expected is the part of a vector's expected.json that the tar layout covers.
type expected struct {
	Entries []struct {
		Name     string `json:"name"`
		Typeflag string `json:"typeflag"`
		Mode     string `json:"mode"`
		SHA256   string `json:"sha256"`
	} `json:"tar_entries_in_order"`
	ConfigRaw string          `json:"build_config_raw"`
	Config    json.RawMessage `json:"build_config"`
}

func vectorTars(t testing.TB) map[string]string {
	t.Helper()
	tars := map[string]string{}
	root := filepath.Join(vectors, "requests")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "body.tar" {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			tars[rel] = p
		}
		return err
	})
	if err != nil {
		t.Fatalf("the captured client vectors (../shared/vectors, beside the repository) are missing: %v", err)
	}
	if len(tars) < 10 {
		t.Fatalf("found %d vector tars, want at least 10", len(tars))
	}
	return tars
}

func TestIndexVectors(t *testing.T) {
	// What the vectors README says about each config.
	spot := map[string]func(c BuildConfig) bool{
		"01-faas-cli-publish-with-build-secrets": func(c BuildConfig) bool {
			return reflect.DeepEqual(c.Platforms, []string{"linux/amd64", "linux/arm64"}) && c.BuildArgs["GREETING"] == "hello-from-stack"
		},
		"04-faas-cli-up-remote-builder": func(c BuildConfig) bool { return c.Platforms == nil },
		"06-go-sdk-BuildWithSecrets":    func(c BuildConfig) bool { return c.SkipPush && c.Image == "ttl.sh/openfaas-wire/wire-a-sdk:1h" },
		"07-curl-documented-flow":       func(c BuildConfig) bool { return c.Image == "ttl.sh/openfaas-wire/wire-a-curl:1h" },
		"09-old-faas-cli-0.17.4-buffered": func(c BuildConfig) bool {
			return reflect.DeepEqual(c.Platforms, []string{"linux/amd64"})
		},
	}
	for name, path := range vectorTars(t) {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(filepath.Dir(path), "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			var exp expected
			if err := json.Unmarshal(raw, &exp); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			req, f, err := index(t, data, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}

			var wantCfg BuildConfig
			if err := json.Unmarshal(exp.Config, &wantCfg); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(req.Config, wantCfg) {
				t.Errorf("config %+v, want %+v", req.Config, wantCfg)
			}
			if check, ok := spot[name]; ok && !check(req.Config) {
				t.Errorf("config %+v does not match the vectors README", req.Config)
			}

			checkAgainstTar(t, req, f, exp)
		})
	}
}

func TestIndexSealedTestVector(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(vectors, "faas-cli-sealed-test/request.tar"))
	if err != nil {
		t.Fatalf("the captured client vectors (../shared/vectors, beside the repository) are missing: %v", err)
	}
	req, f, err := index(t, data, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if req.Config.Image == "" || len(req.SealedSecrets) != 213 {
		t.Errorf("config %+v, %d bytes of secrets", req.Config, len(req.SealedSecrets))
	}
	if st := statOf(t, f, "extra.txt"); st == nil || st.Size != 19 {
		t.Errorf("extra.txt: %+v", st)
	}
}

// checkAgainstTar compares the served tree with the vector's entry list:
// every file present with its sha256 and mode, secrets identical, nothing else.
func checkAgainstTar(t *testing.T, req *Request, f *FS, exp expected) {
	t.Helper()
	want := map[string]bool{}
	for _, e := range exp.Entries {
		name, _ := cleanName(e.Name)
		switch {
		case name == SecretsName:
			if sum := sha256.Sum256(req.SealedSecrets); hex.EncodeToString(sum[:]) != e.SHA256 {
				t.Errorf("SealedSecrets sha256 differs")
			}
		case name == ConfigName:
			if sum := sha256.Sum256([]byte(exp.ConfigRaw)); hex.EncodeToString(sum[:]) != e.SHA256 {
				t.Errorf("build_config_raw sha256 differs from the tar entry")
			}
		case strings.HasPrefix(name, ContextName+"/"):
			rel := strings.TrimPrefix(name, ContextName+"/")
			want[rel] = true
			st := statOf(t, f, rel)
			if st == nil {
				t.Errorf("%s is missing", rel)
				continue
			}
			if e.Typeflag == "'5'" {
				if !st.IsDir() {
					t.Errorf("%s is not a directory", rel)
				}
				continue
			}
			content, ok := readServed(t, f, rel)
			if !ok {
				continue
			}
			if sum := sha256.Sum256(content); hex.EncodeToString(sum[:]) != e.SHA256 {
				t.Errorf("%s sha256 differs", rel)
			}
			if mode, _ := strconv.ParseUint(e.Mode, 8, 32); os.FileMode(st.Mode) != os.FileMode(mode) {
				t.Errorf("%s mode %v, want %s", rel, os.FileMode(st.Mode), e.Mode)
			}
		}
	}
	for rel := range walkAll(t, f) {
		if !want[rel] {
			t.Errorf("unexpected %s in the context", rel)
		}
	}
	if hasSecrets := exp.hasEntry(SecretsName); hasSecrets != (req.SealedSecrets != nil) {
		t.Errorf("SealedSecrets present = %v, want %v", req.SealedSecrets != nil, hasSecrets)
	}
}

func (e expected) hasEntry(name string) bool {
	for _, x := range e.Entries {
		if n, _ := cleanName(x.Name); n == name {
			return true
		}
	}
	return false
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		in      string
		want    BuildConfig
		wantErr bool
	}{
		{in: `{"image":"a","platforms":[""]}`, want: BuildConfig{Image: "a"}},
		{in: `{"image":"a","platforms":["", "linux/arm64", " "]}`, want: BuildConfig{Image: "a", Platforms: []string{"linux/arm64"}}},
		{in: `{"image": "a", "unknown": {"x": 1}, "skipPush": true, "target": "t", "labels": {"k": "v"}}`, want: BuildConfig{Image: "a", SkipPush: true, Target: "t", Labels: map[string]string{"k": "v"}}},
		{in: `{"image":"a","buildArgs":{"ADDITIONAL_PACKAGE":" "}}`, want: BuildConfig{Image: "a", BuildArgs: map[string]string{"ADDITIONAL_PACKAGE": " "}}},
		{in: `{"image":"a","dockerfile":"./x/../Dockerfile"}`, wantErr: true},
		{in: `{"image":"a","dockerfile":"."}`, wantErr: true},
		{in: `{"image":"a","buildArgs":{"x":1}}`, wantErr: true},
		{in: `{"image":"a"} trailing`, wantErr: true},
		{in: `null`, wantErr: true},
		{in: ``, wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseConfig([]byte(tc.in))
		if tc.wantErr {
			var e *Error
			if !errors.As(err, &e) || e.Entry != ConfigName {
				t.Errorf("ParseConfig(%s) error = %v, want *Error for the config", tc.in, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseConfig(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte(`{"image":"ttl.sh/openfaas-wire/wire-a:1h","buildArgs":{"ADDITIONAL_PACKAGE":"","GREETING":"hello-from-stack"},"platforms":["linux/amd64","linux/arm64"]}`))
	f.Add([]byte(`{"image":"a","platforms":[""],"dockerfile":"../x"}`))
	f.Add([]byte(`{"image":"a","skipPush":true,"dockerfile":"sub/Dockerfile"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Entry != ConfigName {
				t.Fatalf("error %v is not a config *Error", err)
			}
			return
		}
		if strings.TrimSpace(c.Image) == "" {
			t.Fatal("accepted an empty image")
		}
		for _, p := range c.Platforms {
			if strings.TrimSpace(p) == "" {
				t.Fatalf("kept an empty platform in %q", c.Platforms)
			}
		}
		if c.Dockerfile != "" {
			if clean, ok := contextPath(c.Dockerfile); !ok || clean != c.Dockerfile {
				t.Fatalf("Dockerfile %q is not a clean path inside the context", c.Dockerfile)
			}
		}
	})
}

// The issue-10 case: 1000 entries 255 levels deep, each under a new top
// directory, imply 255,000 directories. They are charged as entries, so
// the index stops a few hundred entries in, having read a fraction of the
// tar; the same shape within the limit is indexed whole.
func TestImpliedDirectoriesAreCharged(t *testing.T) {
	deep := func(n int) []byte {
		entries := minimal()
		for i := range n {
			entries = append(entries, file(fmt.Sprintf("context/t%04d/", i)+strings.Repeat("d/", 254)+"f", "x"))
		}
		return testenv.BuildTar(t, entries...)
	}
	data := deep(1000)
	in := &countingReader{r: bytes.NewReader(data)}
	_, err := Index(context.Background(), in, Limits{})
	var e *Error
	if !errors.As(err, &e) || !e.TooLarge || !strings.Contains(e.Reason, "entries") {
		t.Fatalf("got %v, want a TooLarge entries error", err)
	}
	var at int
	if _, err := fmt.Sscanf(e.Entry, "context/t%04d/", &at); err != nil || at >= 400 {
		t.Fatalf("refused at %q, want within the first 400 entries", e.Entry)
	}
	if in.n > int64(len(data))/2 {
		t.Fatalf("read %d of %d bytes before refusing", in.n, len(data))
	}
	t.Logf("%d-byte tar refused at entry %d after reading %d bytes", len(data), at, in.n)

	_, f, err := index(t, deep(10), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dirs := 0
	for _, st := range walkAll(t, f) {
		if st.IsDir() {
			dirs++
		}
	}
	if dirs != 10*255 {
		t.Fatalf("%d directories served, want %d", dirs, 10*255)
	}
}

// The Indexer, fed the bytes in pieces as a body arrives, indexes as
// Index does; after a refusal it takes the rest without blocking, and the
// refusal waits for Finish.
func TestIndexerMatchesIndex(t *testing.T) {
	for name, p := range vectorTars(t) {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ix := NewIndexer(context.Background(), Limits{})
		for chunk := range slices.Chunk(data, 333) {
			if n, err := ix.Write(chunk); n != len(chunk) || err != nil {
				t.Fatalf("%s: Write = %d, %v", name, n, err)
			}
		}
		got, err := ix.Finish()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, f, err := index(t, data, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Config, want.Config) || !bytes.Equal(got.SealedSecrets, want.SealedSecrets) ||
			!reflect.DeepEqual(walked(t, got.Context.Serve(bytes.NewReader(data)), "/"), walked(t, f, "/")) {
			t.Errorf("%s: the Indexer and Index disagree", name)
		}
	}

	bad := testenv.BuildTar(t, append(minimal(), file("../x", "x"))...)
	ix := NewIndexer(context.Background(), Limits{})
	ix.Write(bad)
	ix.Write(make([]byte, 1<<20)) // more after the refusal
	var e *Error
	if _, err := ix.Finish(); !errors.As(err, &e) || e.Entry != "../x" {
		t.Fatalf("got %v, want the refusal of ../x", err)
	}
	ix = NewIndexer(context.Background(), Limits{})
	ix.Write(bad[:700])
	ix.Abandon()
}

// An Indexer costs no goroutine until its first byte: a request refused
// before its body is read (no signature) starts none. An empty body is
// still judged.
func TestIndexerStartsWithItsFirstByte(t *testing.T) {
	before := runtime.NumGoroutine()
	ix := NewIndexer(context.Background(), Limits{})
	// More, not different: an earlier test's goroutine may still be ending.
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after NewIndexer, %d before", n, before)
	}
	ix.Abandon()
	if _, err := ix.Finish(); !errors.Is(err, errAbandoned) {
		t.Fatalf("Finish after Abandon = %v, want %v", err, errAbandoned)
	}
	var e *Error
	if _, err := NewIndexer(context.Background(), Limits{}).Finish(); !errors.As(err, &e) || e.Entry != ConfigName {
		t.Fatalf("empty body: got %v, want the missing build config", err)
	}
}

// cancelAfter cancels its context once n bytes have been read through it.
type cancelAfter struct {
	r      io.Reader
	n      int64
	read   int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.read += int64(n); c.read >= c.n {
		c.cancel()
	}
	return n, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestIndexStopsWhenCancelled(t *testing.T) {
	t.Run("between entries", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pr.Close()
		go func() { // an endless tar
			tw := tar.NewWriter(pw)
			for i := 0; ; i++ {
				if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("context/d%d/f", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}); err != nil {
					return
				}
				if _, err := tw.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := Index(ctx, &cancelAfter{r: pr, n: 1 << 20, cancel: cancel}, Limits{MaxEntries: 1 << 30})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("within a large file", func(t *testing.T) {
		hdr := bytes.NewReader(testenv.HeaderBlocks(t, tar.Header{Name: "context/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 30}))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		in := &cancelAfter{r: io.MultiReader(hdr, zeros{}), n: 8 << 20, cancel: cancel}
		_, err := Index(ctx, in, Limits{MaxBytes: 2 << 30})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if in.read > 8<<20+2*cancelEvery {
			t.Fatalf("read %d bytes after cancelling at %d", in.read, 8<<20)
		}
	})
}

// BuildKit re-sends a file when its metadata differs from its incremental
// copy: the mtime served must change with the bytes and only with them.
func TestMtimesFollowContent(t *testing.T) {
	request := func(data string, mtime time.Time) *FS {
		_, f, err := index(t, testenv.BuildTar(t, at(mtime, file("context/Dockerfile", dockerfile), file("context/data.txt", data), file(ConfigName, goodConfig))...), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	t1, t2 := time.Unix(1700000000, 0), time.Unix(1800000000, 0)
	a := walkAll(t, request("tenant-a-secret!", t1))
	b := walkAll(t, request("tenant-b-guess!!", t1)) // same path, size and client mtime
	c := walkAll(t, request("tenant-a-secret!", t2)) // same bytes, copied afresh
	if a["data.txt"].ModTime == b["data.txt"].ModTime {
		t.Errorf("different bytes, same mtime %d", a["data.txt"].ModTime)
	}
	for _, p := range []string{"data.txt", "Dockerfile"} {
		if a[p].ModTime != c[p].ModTime || a[p].Uid != c[p].Uid || a[p].Mode != c[p].Mode {
			t.Errorf("%s: same bytes served differently: %+v and %+v", p, a[p], c[p])
		}
	}
	if a["Dockerfile"].ModTime != b["Dockerfile"].ModTime {
		t.Errorf("unchanged Dockerfile got a new mtime")
	}
	for _, st := range a {
		if when := time.Unix(0, st.ModTime); when.Year() < 2000 || when.After(time.Now()) {
			t.Errorf("%s: mtime %v", st.Path, when)
		}
	}
}

// diskTree is a context laid out on disk, with the tar a client would
// make of it: directories, modes, symlinks, and a hard link whose name
// sorts before its file's.
func diskTree(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	files := []struct {
		name, body string
		mode       os.FileMode
	}{
		{"Dockerfile", dockerfile, 0o644},
		{"a.txt", "a dot txt", 0o600},
		{"a/b", "a slash b", 0o644},
		{"a/c/run.sh", "#!/bin/sh\n", 0o755},
		{"a-b", "a dash b", 0o644},
		{"z/original", "linked twice", 0o640},
		{".dockerignore", "ignored/\n*.log\n!keep.log\n", 0o644},
		{"ignored/secret", "not for the image", 0o644},
		{"x.log", "log", 0o644},
		{"keep.log", "kept", 0o644},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"empty", "a/c"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"a/up": "../Dockerfile", "self": ".", "dangling": "nowhere", "to-a": "a"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(dir, "z/original"), filepath.Join(dir, "a/hard")); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	if err := testenv.WriteContextTar(&buf, dir, []byte(goodConfig)); err != nil {
		t.Fatal(err)
	}
	return dir, buf.Bytes()
}

// walked is one walk's output without what the index decides itself
// (mtimes, owners).
func walked(t *testing.T, f fsutil.FS, target string) []string {
	t.Helper()
	var out []string
	err := f.Walk(context.Background(), target, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*types.Stat)
		out = append(out, fmt.Sprintf("%s %v size=%d link=%q", p, os.FileMode(st.Mode), st.Size, st.Linkname))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The served tree walks like fsutil's own FS over the same files on disk,
// which is what BuildKit's client sends for `buildctl --local`: the same
// paths in the same order with the same types, modes, sizes and links,
// also through the filters BuildKit applies (.dockerignore patterns,
// include patterns and followed symlinks) and from a subdirectory.
func TestWalkMatchesFsutilOnDisk(t *testing.T) {
	dir, data := diskTree(t)
	_, served, err := index(t, data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := fsutil.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	compare := func(what string, want, got []string) {
		t.Helper()
		if !slices.Equal(want, got) {
			t.Errorf("%s:\nfsutil on disk:\n  %s\nindex:\n  %s", what, strings.Join(want, "\n  "), strings.Join(got, "\n  "))
		}
	}
	compare("whole walk", walked(t, onDisk, "/"), walked(t, served, "/"))
	for _, target := range []string{"a", "a/c/run.sh", "to-a", "missing", "a/../a.txt"} {
		compare("walk of "+target, walked(t, onDisk, target), walked(t, served, target))
	}
	for _, opt := range []fsutil.FilterOpt{
		{ExcludePatterns: []string{"ignored/", "*.log", "!keep.log"}},
		{IncludePatterns: []string{"a/c", "Dockerfile"}},
		{FollowPaths: []string{"to-a/b", "Dockerfile"}},
		{IncludePatterns: []string{"a"}, ExcludePatterns: []string{"a/c"}},
	} {
		want, err := fsutil.NewFilterFS(onDisk, &opt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fsutil.NewFilterFS(served, &opt)
		if err != nil {
			t.Fatal(err)
		}
		compare(fmt.Sprintf("filtered %+v", opt), walked(t, want, "/"), walked(t, got, "/"))
	}
	subDisk, err := fsutil.NewFS(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := served.Sub("a")
	if err != nil {
		t.Fatal(err)
	}
	compare("sub a", walked(t, subDisk, "/"), walked(t, sub, "/"))
	for _, bad := range []string{"a.txt", "to-a", "nope"} {
		if _, err := served.Sub(bad); err == nil {
			t.Errorf("Sub(%q) served a non-directory", bad)
		}
	}
}

// pipeConn is one end of an in-memory fsutil stream.
type pipeConn struct {
	ctx        context.Context
	recv, send chan []byte
}

func connPair(ctx context.Context) (*pipeConn, *pipeConn) {
	a, b := make(chan []byte, 64), make(chan []byte, 64)
	return &pipeConn{ctx, a, b}, &pipeConn{ctx, b, a}
}

func (c *pipeConn) Context() context.Context { return c.ctx }

func (c *pipeConn) SendMsg(m any) error {
	data, err := m.(*types.Packet).MarshalVT() // the sender reuses its buffers
	if err != nil {
		return err
	}
	select {
	case c.send <- data:
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

func (c *pipeConn) RecvMsg(m any) error {
	select {
	case data, ok := <-c.recv:
		if !ok {
			return io.EOF
		}
		return m.(*types.Packet).UnmarshalVT(data)
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

// openCounter records which files a transfer read.
type openCounter struct {
	*FS
	mu     sync.Mutex
	opened []string
}

func (o *openCounter) Open(p string) (io.ReadCloser, error) {
	o.mu.Lock()
	o.opened = append(o.opened, p)
	o.mu.Unlock()
	return o.FS.Open(p)
}

// transfer sends f with fsutil.Send into dest with fsutil.Receive, as a
// BuildKit client and daemon do, and returns the files the daemon asked for.
func transfer(t *testing.T, f *FS, dest string) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client, daemon := connPair(ctx)
	counted := &openCounter{FS: f}
	var g errgroup.Group
	g.Go(func() error {
		defer close(client.send) // the receiver waits for the end of the stream
		return fsutil.Send(ctx, client, counted, nil)
	})
	g.Go(func() error { return fsutil.Receive(ctx, daemon, dest, fsutil.ReceiveOpt{}) })
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(counted.opened)
	return counted.opened
}

// What BuildKit's incremental transfer does with served contexts: the
// first sends every file, a second with one file's bytes changed (same
// size, every client mtime new) sends that file alone, and a third
// identical one sends nothing; the copy always holds the latest bytes.
func TestIncrementalTransferSendsChangedFilesOnly(t *testing.T) {
	request := func(data string, mtime time.Time) *FS {
		body := testenv.BuildTar(t, at(mtime, dir("context/sub"), file("context/Dockerfile", dockerfile), file("context/sub/data.txt", data), file("context/sub/same.txt", "unchanged"),
			symlink("context/link", "sub/data.txt"), hardlink("context/hard", "context/sub/same.txt"), file(ConfigName, goodConfig))...)
		_, f, err := index(t, body, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	dest := t.TempDir()
	first := transfer(t, request("version-1", time.Unix(1700000000, 0)), dest)
	if want := []string{"Dockerfile", "hard", "sub/data.txt"}; !slices.Equal(first, want) && !slices.Equal(first, []string{"Dockerfile", "sub/data.txt", "sub/same.txt"}) {
		t.Fatalf("first transfer read %v", first)
	}
	second := transfer(t, request("version-2", time.Unix(1800000000, 0)), dest)
	if !slices.Equal(second, []string{"sub/data.txt"}) {
		t.Fatalf("second transfer read %v, want only sub/data.txt", second)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "sub/data.txt")); string(got) != "version-2" {
		t.Fatalf("the copy holds %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "link")); string(got) != "version-2" {
		t.Fatalf("the link reads %q", got)
	}
	if third := transfer(t, request("version-2", time.Unix(1900000000, 0)), dest); len(third) != 0 {
		t.Fatalf("third transfer read %v, want nothing", third)
	}
}

// FuzzIndex feeds mutated tars to Index. Whatever it accepts must serve,
// for every file, the bytes archive/tar reads for that entry, walk in an
// order fsutil's receiver accepts, and hold no symlink that resolves
// outside the context.
func FuzzIndex(f *testing.F) {
	for _, p := range vectorTars(f) {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add(testenv.BuildTar(f, minimal()...))
	f.Add(testenv.BuildTar(f, append(minimal(), symlink("context/a", "sub"), dir("context/sub"), symlink("context/b", "a/.."), file("context/a/x", "x"))...))
	f.Add(testenv.BuildTar(f, append(minimal(), file("../x", "x"), hardlink("context/h", "context/Dockerfile"))...))
	f.Add(testenv.BuildTar(f, append(minimal(), symlink("context/l", "/tmp"), file("context/l/evil", "x"))...))
	f.Add(testenv.BuildTar(f, append(minimal(), dir("context/a.b"), file("context/a/b", "ab"), file("context/a-b", "a-b"), hardlink("context/0", "context/a/b"))...))
	f.Add(testenv.BuildTar(f, append(minimal(), testenv.GNUSparse(f, "context/s", 2000, testenv.SparseRun{At: 10, Data: "xyz"}, testenv.SparseRun{At: 1500, Data: "q"}))...))
	f.Add(hugeHeader(f))

	lim := Limits{MaxBytes: 1 << 20, MaxEntries: 200, MaxConfigBytes: 4 << 10, MaxSecretsBytes: 4 << 10}
	f.Fuzz(func(t *testing.T, data []byte) {
		data = fixChecksums(data)
		req, err := Index(context.Background(), bytes.NewReader(data), lim)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("non-archive error: %v", err)
			}
			return
		}
		served := req.Context.Serve(bytes.NewReader(data))

		// What archive/tar itself reads for each context file.
		want := map[string][]byte{}
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			name, _ := cleanName(hdr.Name)
			rel, ok := strings.CutPrefix(name, ContextName+"/")
			switch {
			case !ok:
			case hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeGNUSparse:
				want[rel], _ = io.ReadAll(tr)
			case hdr.Typeflag == tar.TypeLink:
				target, _ := cleanName(hdr.Linkname)
				want[rel] = want[strings.TrimPrefix(target, ContextName+"/")]
			}
		}

		stats := map[string]*types.Stat{}
		var order fsutil.Validator
		var links fsutil.Hardlinks
		err = fsutil.WithHardlinkReset(served).Walk(context.Background(), "/", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := order.HandleChange(fsutil.ChangeKindAdd, p, fi, nil); err != nil {
				return err
			}
			if err := links.HandleChange(fsutil.ChangeKindAdd, p, fi, nil); err != nil {
				return err
			}
			stats[p] = fi.Sys().(*types.Stat)
			return nil
		})
		if err != nil {
			t.Fatalf("walk: %v", err)
		}
		for p, st := range stats {
			mode := os.FileMode(st.Mode)
			switch {
			case mode.IsRegular():
				r, err := served.Open(p)
				if err != nil {
					t.Fatalf("open %s: %v", p, err)
				}
				got, err := io.ReadAll(r)
				if err != nil {
					t.Fatalf("read %s: %v", p, err)
				}
				if w, ok := want[p]; !ok || !bytes.Equal(got, w) {
					t.Fatalf("%s serves %d bytes that differ from the tar's %d", p, len(got), len(w))
				}
			case mode&os.ModeSymlink != 0:
				if escapes(stats, p) {
					t.Fatalf("symlink %s -> %s resolves outside the context", p, st.Linkname)
				}
			case mode.IsDir():
			default:
				t.Fatalf("%s has special mode %v", p, mode)
			}
		}
		if len(want) != countFiles(stats) {
			t.Fatalf("%d files in the tar, %d served", len(want), countFiles(stats))
		}
	})
}

func countFiles(stats map[string]*types.Stat) int {
	n := 0
	for _, st := range stats {
		if os.FileMode(st.Mode).IsRegular() {
			n++
		}
	}
	return n
}

// escapes follows the symlink at p through the walked tree, lexically
// where a name does not exist, and reports whether it climbs above the
// root. A loop stops as the kernel's ELOOP would.
func escapes(stats map[string]*types.Stat, p string) bool {
	var follow func(dir, rest []string, hops int) bool
	follow = func(dir, rest []string, hops int) bool {
		for len(rest) > 0 {
			c := rest[0]
			rest = rest[1:]
			switch c {
			case "", ".":
				continue
			case "..":
				if len(dir) == 0 {
					return true
				}
				dir = dir[:len(dir)-1]
				continue
			}
			here := append(slices.Clone(dir), c)
			st := stats[strings.Join(here, "/")]
			if st == nil || os.FileMode(st.Mode)&os.ModeSymlink == 0 {
				dir = here
				continue
			}
			if hops > 40 {
				return false
			}
			if strings.HasPrefix(st.Linkname, "/") {
				return true
			}
			return follow(dir, append(strings.Split(st.Linkname, "/"), rest...), hops+1)
		}
		return false
	}
	return follow(nil, strings.Split(p, "/"), 0)
}

// fixChecksums rewrites the checksum of every header it can find, so that the
// fuzzer's mutations of names, types and links reach Extract instead of all
// dying as archive/tar.ErrHeader.
func fixChecksums(data []byte) []byte {
	data = bytes.Clone(data)
	for off := 0; off+512 <= len(data); {
		blk := data[off : off+512]
		if bytes.Count(blk, []byte{0}) == 512 {
			break
		}
		testenv.TarChecksum(blk)
		size, err := strconv.ParseInt(strings.Trim(string(blk[124:136]), " \x00"), 8, 64)
		if err != nil || size < 0 || size > int64(len(data)) {
			break
		}
		off += 512 + int(size+511)/512*512
	}
	return data
}

func BenchmarkIndex(b *testing.B) {
	const files, size = 256, 256 << 10 // 64 MiB in total
	entries := minimal()
	content := strings.Repeat("0123456789abcdef", size/16)
	for i := range files {
		entries = append(entries, file("context/src/file"+strconv.Itoa(i), content))
	}
	data := testenv.BuildTar(b, entries...)
	b.SetBytes(files * size)
	for b.Loop() {
		if _, err := Index(context.Background(), bytes.NewReader(data), DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
}
