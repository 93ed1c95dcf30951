package buildtar

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// vectors is the shared folder of captures from the real clients.
const vectors = "../../../shared/vectors"

const (
	goodConfig = `{"image":"example.com/fn:latest"}`
	dockerfile = "FROM scratch\nCOPY . /\n"
)

// entry describes one tar entry for building test archives.
type entry struct {
	name string
	typ  byte
	body string
	link string
	mode int64
}

func file(name, body string) entry  { return entry{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) entry         { return entry{name: name, typ: tar.TypeDir} }
func symlink(name, to string) entry { return entry{name: name, typ: tar.TypeSymlink, link: to} }
func hardlink(name, to string) entry {
	return entry{name: name, typ: tar.TypeLink, link: to}
}

// minimal is the smallest valid request: config plus a Dockerfile.
func minimal() []entry {
	return []entry{dir("context"), file("context/Dockerfile", dockerfile), file(ConfigName, goodConfig)}
}

func makeTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: mode, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// hugeHeader is a tar whose only file claims 1 TiB and carries no data.
func hugeHeader(t testing.TB) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "context/huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes() // deliberately no data and no Close
}

// extract runs Extract in parent/work, where parent is a fresh temp dir, so
// the test can check that nothing appears next to the work dir either.
func extract(t *testing.T, data []byte, lim Limits) (req *Request, err error, parent, work string) {
	t.Helper()
	parent = t.TempDir()
	work = filepath.Join(parent, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	req, err = Extract(bytes.NewReader(data), work, lim)
	return req, err, parent, work
}

// assertNothingLeft checks that work is empty and is parent's only child.
func assertNothingLeft(t *testing.T, parent, work string) {
	t.Helper()
	for dir, want := range map[string]int{work: 0, parent: 1} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != want {
			t.Errorf("%s holds %v after a failed extract", dir, entries)
		}
	}
}

func TestExtractRefuses(t *testing.T) {
	small := Limits{MaxBytes: 100, MaxEntries: 10, MaxConfigBytes: 64, MaxSecretsBytes: 16}
	ok := minimal()
	with := func(extra ...entry) []byte { return makeTar(t, append(minimal(), extra...)...) }
	withFirst := func(extra ...entry) []byte { return makeTar(t, append(extra, minimal()...)...) }
	full := makeTar(t, ok...)

	outside := t.TempDir() // an absolute directory outside any work dir

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
		{"char device", with(entry{name: "context/null", typ: tar.TypeChar}), small, "context/null", "device", false},
		{"block device", with(entry{name: "context/sda", typ: tar.TypeBlock}), small, "context/sda", "device", false},
		{"fifo", with(entry{name: "context/pipe", typ: tar.TypeFifo}), small, "context/pipe", "fifo", false},
		{"name component too long", with(file("context/"+strings.Repeat("n", 300), "x")), small, "context/" + strings.Repeat("n", 300), "name too long", false},
		{"path too deep", with(file("context/"+strings.Repeat("d/", 300)+"f", "x")), small, "context/" + strings.Repeat("d/", 300) + "f", "too deep", false},
		{"duplicate file", with(file("context/Dockerfile", "FROM evil")), small, "context/Dockerfile", "duplicate entry", false},
		{"file over directory", with(dir("context/d"), file("context/d", "x")), small, "context/d", "duplicate entry", false},
		{"symlink over file", with(symlink("context/Dockerfile", "x")), small, "context/Dockerfile", "duplicate entry", false},
		{"duplicate config", with(file(ConfigName, goodConfig)), small, ConfigName, "duplicate entry", false},
		{"duplicate secrets", with(file(SecretsName, "a"), file("./"+SecretsName, "b")), small, "./" + SecretsName, "duplicate entry", false},
		{"config is a directory", withFirst(dir(ConfigName)), small, ConfigName, "regular file", false},
		{"context is a file", makeTar(t, file("context", "x"), file(ConfigName, goodConfig)), small, "context", "must be a directory", false},
		{"context is a symlink", makeTar(t, symlink("context", "/"), file(ConfigName, goodConfig)), small, "context", "must be a directory", false},
		{"root is a file", withFirst(file(".", "x")), small, ".", "must be a directory", false},
		{"too many entries", with(file("context/a", "1"), file("context/b", "2")), Limits{MaxEntries: 4}, "context/b", "entries", true},
		{"too many bytes", with(file("context/a", strings.Repeat("a", 60)), file("context/b", strings.Repeat("b", 60))), small, "context/b", "larger than", true},
		{"huge declared size", append(makeTar(t, ok...)[:len(full)-1024], hugeHeader(t)...), small, "context/huge", "larger than", true},
		{"config too large", makeTar(t, file(ConfigName, `{"image":"`+strings.Repeat("x", 100)+`"}`)), small, ConfigName, "larger than", true},
		{"secrets too large", with(file(SecretsName, strings.Repeat("s", 17))), small, SecretsName, "larger than", true},
		{"truncated data", with(file("context/big", strings.Repeat("z", 5000)))[:len(full)+2048], Limits{}, "context/big", "unexpected EOF", false},
		{"bad config JSON", withFirst(file(ConfigName, `{"image":`)), small, ConfigName, "invalid JSON", false},
		{"config without image", makeTar(t, file(ConfigName, `{"platforms":["linux/amd64"]}`)), small, ConfigName, "image", false},
		{"config with empty image", makeTar(t, file(ConfigName, `{"image":"  "}`)), small, ConfigName, "image", false},
		{"config dockerfile escapes", makeTar(t, file(ConfigName, `{"image":"x","dockerfile":"../Dockerfile"}`)), small, ConfigName, "dockerfile", false},
		{"config dockerfile absolute", makeTar(t, file(ConfigName, `{"image":"x","dockerfile":"/Dockerfile"}`)), small, ConfigName, "dockerfile", false},
		{"missing config", makeTar(t, dir("context"), file("context/Dockerfile", dockerfile)), small, ConfigName, "missing", false},
		{"empty archive", nil, small, ConfigName, "missing", false},
		{"missing Dockerfile", makeTar(t, dir("context"), file("context/hello.txt", "hi"), file(ConfigName, goodConfig)), small, "context/Dockerfile", "missing", false},
		{"missing context", makeTar(t, file(ConfigName, goodConfig)), small, "context/Dockerfile", "missing", false},
		{"Dockerfile is a symlink", makeTar(t, file("context/real", dockerfile), symlink("context/Dockerfile", "real"), file(ConfigName, goodConfig)), small, "context/Dockerfile", "not a regular file", false},
		{"configured Dockerfile missing", makeTar(t, file("context/Dockerfile", dockerfile), file(ConfigName, `{"image":"x","dockerfile":"build/Dockerfile"}`)), small, "context/build/Dockerfile", "missing", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err, parent, work := extract(t, tc.tar, tc.lim)
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
			assertNothingLeft(t, parent, work)
		})
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("something was written outside: %v", entries)
	}
}

func TestExtractTruncatedHeader(t *testing.T) {
	data := makeTar(t, minimal()...)
	_, err, parent, work := extract(t, data[:512+100], Limits{})
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want *Error wrapping io.ErrUnexpectedEOF", err)
	}
	assertNothingLeft(t, parent, work)
}

// The caller's work dir must be fresh: Extract never reuses or removes a
// context directory it did not create.
func TestExtractExistingContextDir(t *testing.T) {
	work := t.TempDir()
	keep := filepath.Join(work, "context", "keep")
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Extract(bytes.NewReader(makeTar(t, minimal()...)), work, Limits{})
	var e *Error
	if err == nil || errors.As(err, &e) {
		t.Fatalf("got %v, want a plain (server-side) error", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("existing context dir was touched: %v", err)
	}
}

func TestExtractAccepts(t *testing.T) {
	longName := "context/" + strings.Repeat("d", 120) + "/" + strings.Repeat("f", 120)
	tests := []struct {
		name  string
		tar   []byte
		check func(t *testing.T, req *Request)
	}{
		{"absolute names are stripped", makeTar(t, file("/context/Dockerfile", dockerfile), file("/"+ConfigName, goodConfig)), nil},
		{"parents made implicitly", makeTar(t, file("context/a/b/c.txt", "c"), file("context/Dockerfile", dockerfile), file(ConfigName, goodConfig)),
			func(t *testing.T, req *Request) { wantFile(t, req, "a/b/c.txt", "c", 0o644) }},
		{"modes kept without setuid", makeTar(t, entry{name: "context/run.sh", typ: tar.TypeReg, body: "#!/bin/sh", mode: 0o4755}, entry{name: "context/Dockerfile", typ: tar.TypeReg, body: dockerfile, mode: 0o600}, file(ConfigName, goodConfig)),
			func(t *testing.T, req *Request) {
				wantFile(t, req, "run.sh", "#!/bin/sh", 0o755)
				wantFile(t, req, "Dockerfile", dockerfile, 0o600)
			}},
		{"links inside the context", makeTar(t, dir("context/sub"), file("context/Dockerfile", dockerfile), symlink("context/sub/up", "../Dockerfile"), symlink("context/self", "."), symlink("context/dangling", "sub/nothing"), hardlink("context/sub/copy", "./context/Dockerfile"), file(ConfigName, goodConfig)),
			func(t *testing.T, req *Request) {
				wantFile(t, req, "sub/up", dockerfile, 0o644)
				wantFile(t, req, "sub/copy", dockerfile, 0o644)
				if target, err := os.Readlink(filepath.Join(req.ContextDir, "dangling")); err != nil || target != "sub/nothing" {
					t.Errorf("dangling link: %q, %v", target, err)
				}
			}},
		{"PAX global header and long names", func() []byte {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			must := func(err error) {
				if err != nil {
					t.Fatal(err)
				}
			}
			must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "hi"}}))
			for _, e := range []entry{file(longName, "long"), file("context/Dockerfile", dockerfile), file(ConfigName, goodConfig)} {
				must(tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body)), Format: tar.FormatGNU}))
				_, err := io.WriteString(tw, e.body)
				must(err)
			}
			must(tw.Close())
			return buf.Bytes()
		}(), func(t *testing.T, req *Request) {
			wantFile(t, req, strings.TrimPrefix(longName, "context/"), "long", 0o644)
		}},
		{"configured Dockerfile", makeTar(t, file("./context/build/Dockerfile.prod", dockerfile), file(ConfigName, `{"image":"x","dockerfile":"./build//Dockerfile.prod"}`)),
			func(t *testing.T, req *Request) {
				if req.Config.Dockerfile != "build/Dockerfile.prod" {
					t.Errorf("Dockerfile = %q", req.Config.Dockerfile)
				}
			}},
		{"platforms [\"\"] means default", makeTar(t, file("context/Dockerfile", dockerfile), file(ConfigName, `{"image":"x","platforms":[""]}`)),
			func(t *testing.T, req *Request) {
				if req.Config.Platforms != nil {
					t.Errorf("Platforms = %q, want none", req.Config.Platforms)
				}
			}},
		{"secrets kept in memory", makeTar(t, file(SecretsName, "sealed"), file("context/Dockerfile", dockerfile), file(ConfigName, goodConfig)),
			func(t *testing.T, req *Request) {
				if string(req.SealedSecrets) != "sealed" {
					t.Errorf("SealedSecrets = %q", req.SealedSecrets)
				}
				if _, err := os.Lstat(filepath.Join(req.ContextDir, SecretsName)); !os.IsNotExist(err) {
					t.Errorf("secrets written to the context")
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err, _, work := extract(t, tc.tar, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if req.ContextDir != filepath.Join(work, "context") {
				t.Errorf("ContextDir = %q", req.ContextDir)
			}
			if req.Config.Dockerfile == "" {
				wantFile(t, req, "Dockerfile", dockerfile, -1)
			}
			if tc.check != nil {
				tc.check(t, req)
			}
		})
	}
}

// wantFile checks content and, unless perm < 0, the permission bits.
func wantFile(t *testing.T, req *Request, rel, content string, perm int) {
	t.Helper()
	p := filepath.Join(req.ContextDir, filepath.FromSlash(rel))
	got, err := os.ReadFile(p)
	if err != nil {
		t.Error(err)
		return
	}
	if string(got) != content {
		t.Errorf("%s = %q, want %q", rel, got, content)
	}
	if perm >= 0 {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != os.FileMode(perm) {
			t.Errorf("%s mode = %v, want %v", rel, fi.Mode(), os.FileMode(perm))
		}
	}
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
		t.Skipf("vectors not available: %v", err)
	}
	if len(tars) < 10 {
		t.Fatalf("found %d vector tars, want at least 10", len(tars))
	}
	return tars
}

func TestExtractVectors(t *testing.T) {
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
			req, err, _, _ := extract(t, data, DefaultLimits())
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

			checkAgainstTar(t, req, exp)
		})
	}
}

func TestExtractSealedTestVector(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(vectors, "faas-cli-sealed-test/request.tar"))
	if err != nil {
		t.Skipf("vectors not available: %v", err)
	}
	req, err, _, _ := extract(t, data, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if req.Config.Image == "" || len(req.SealedSecrets) != 213 {
		t.Errorf("config %+v, %d bytes of secrets", req.Config, len(req.SealedSecrets))
	}
	if got, _ := os.ReadFile(filepath.Join(req.ContextDir, "extra.txt")); len(got) != 19 {
		t.Errorf("extra.txt = %q", got)
	}
}

// checkAgainstTar compares the extracted tree with the vector's entry list:
// every file present with its sha256 and mode, secrets identical, nothing else.
func checkAgainstTar(t *testing.T, req *Request, exp expected) {
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
			p := filepath.Join(req.ContextDir, filepath.FromSlash(rel))
			fi, err := os.Lstat(p)
			if err != nil {
				t.Error(err)
				continue
			}
			if e.Typeflag == "'5'" {
				if !fi.IsDir() {
					t.Errorf("%s is not a directory", rel)
				}
				continue
			}
			content, err := os.ReadFile(p)
			if err != nil {
				t.Error(err)
				continue
			}
			if sum := sha256.Sum256(content); hex.EncodeToString(sum[:]) != e.SHA256 {
				t.Errorf("%s sha256 differs", rel)
			}
			if mode, _ := strconv.ParseUint(e.Mode, 8, 32); fi.Mode() != os.FileMode(mode) {
				t.Errorf("%s mode %v, want %s", rel, fi.Mode(), e.Mode)
			}
		}
	}
	filepath.WalkDir(req.ContextDir, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(req.ContextDir, p)
		if rel != "." && !want[filepath.ToSlash(rel)] {
			t.Errorf("unexpected %s in the context", rel)
		}
		return err
	})
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

// FuzzExtract inputs are whole tars of several KiB, and each run touches the
// disk, so the default minimization of every new input stalls the progress
// counter for a long time; -fuzzminimizetime=50x keeps the fuzzer moving.
func FuzzExtract(f *testing.F) {
	for _, p := range vectorTars(f) {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add(makeTar(f, minimal()...))
	f.Add(makeTar(f, append(minimal(), symlink("context/a", "sub"), dir("context/sub"), symlink("context/b", "a/.."), file("context/a/x", "x"))...))
	f.Add(makeTar(f, append(minimal(), file("../x", "x"), hardlink("context/h", "context/Dockerfile"))...))
	f.Add(makeTar(f, append(minimal(), symlink("context/l", "/tmp"), file("context/l/evil", "x"))...))
	f.Add(hugeHeader(f))

	lim := Limits{MaxBytes: 1 << 20, MaxEntries: 200, MaxConfigBytes: 4 << 10, MaxSecretsBytes: 4 << 10}
	f.Fuzz(func(t *testing.T, data []byte) {
		data = fixChecksums(data)
		parent := t.TempDir()
		work := filepath.Join(parent, "work")
		if err := os.Mkdir(work, 0o755); err != nil {
			t.Fatal(err)
		}
		req, err := Extract(bytes.NewReader(data), work, lim)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("non-archive error: %v", err)
			}
			assertNothingLeft(t, parent, work)
			return
		}
		if top, _ := os.ReadDir(work); len(top) != 1 || top[0].Name() != "context" {
			t.Fatalf("work dir holds %v", top)
		}
		if siblings, _ := os.ReadDir(parent); len(siblings) != 1 {
			t.Fatalf("written next to the work dir: %v", siblings)
		}
		ctx := req.ContextDir
		filepath.WalkDir(ctx, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			if d.Type()&os.ModeSymlink == 0 {
				if d.Type()&^os.ModeDir != 0 {
					t.Fatalf("%s has special mode %v", p, d.Type())
				}
				return nil
			}
			// Resolve fully when possible; a dangling link is judged by the
			// part that exists plus the lexical rest.
			resolved, err := filepath.EvalSymlinks(p)
			if err != nil {
				target, _ := os.Readlink(p)
				resolved = filepath.Join(filepath.Dir(p), target)
			}
			if resolved != ctx && !strings.HasPrefix(resolved, ctx+string(filepath.Separator)) {
				t.Fatalf("symlink %s resolves to %s, outside the context", p, resolved)
			}
			return nil
		})
	})
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
		copy(blk[148:156], "        ")
		var sum int64
		for _, c := range blk {
			sum += int64(c)
		}
		copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
		size, err := strconv.ParseInt(strings.Trim(string(blk[124:136]), " \x00"), 8, 64)
		if err != nil || size < 0 || size > int64(len(data)) {
			break
		}
		off += 512 + int(size+511)/512*512
	}
	return data
}

func BenchmarkExtract(b *testing.B) {
	const files, size = 256, 256 << 10 // 64 MiB in total
	entries := minimal()
	content := strings.Repeat("0123456789abcdef", size/16)
	for i := range files {
		entries = append(entries, file("context/src/file"+strconv.Itoa(i), content))
	}
	data := makeTar(b, entries...)
	base := b.TempDir()
	b.SetBytes(files * size)
	for b.Loop() {
		work, err := os.MkdirTemp(base, "work")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Extract(bytes.NewReader(data), work, DefaultLimits()); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(work)
	}
}
