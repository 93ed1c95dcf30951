package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/seal"

	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// vectorDir is the shared folder of wire vectors captured with the real clients.
const vectorDir = "../../../shared/vectors"

const vectorKeyID = "7OoESESw"

func vectorPath(rel string) string { return filepath.Join(vectorDir, rel) }

func readVectorFile(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(vectorPath(rel))
	if err != nil {
		t.Fatalf("read vector: %v", err)
	}
	return data
}

// runFnb runs the CLI in-process.
func runFnb(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// vectorPlaintexts decodes sealed/expected-plaintexts.json to raw bytes.
func vectorPlaintexts(t *testing.T) map[string][]byte {
	t.Helper()
	var doc struct {
		Secrets map[string]struct {
			Base64 string `json:"base64"`
		} `json:"secrets"`
	}
	if err := json.Unmarshal(readVectorFile(t, "sealed/expected-plaintexts.json"), &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for name, s := range doc.Secrets {
		raw, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = raw
	}
	if len(out) != 4 {
		t.Fatalf("vector has %d plaintexts, want 4", len(out))
	}
	return out
}

// nameValueLines is the expected default unseal output: name=value lines
// sorted by name, values as raw bytes.
func nameValueLines(values map[string][]byte) string {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, name := range names {
		b.WriteString(name + "=")
		b.Write(values[name])
		b.WriteByte('\n')
	}
	return b.String()
}

func TestUnseal(t *testing.T) {
	key := vectorPath("keys/key")
	sealed := vectorPath("sealed/com.openfaas.secrets")
	plain := vectorPlaintexts(t)
	all := nameValueLines(plain)
	if !strings.Contains(all, "\r\n") || !strings.Contains(all, "\x00\x01\x02\xff\xfe\x80") {
		t.Fatal("expected output lost the CRLF/NUL bytes of ca.crt")
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"private-key flag", []string{"unseal", "--private-key", key, sealed}, all},
		{"faas-cli positional form", []string{"unseal", key, "--in", sealed}, all},
		{"in flag first", []string{"unseal", "--in", sealed, key}, all},
		{"single dash flags", []string{"unseal", "-private-key", key, "-in", sealed}, all},
		{"key db_url", []string{"unseal", "--private-key", key, "--key", "db_url", sealed}, string(plain["db_url"])},
		{"key ca.crt is binary-exact", []string{"unseal", key, "--in", sealed, "--key", "ca.crt"}, string(plain["ca.crt"])},
		{"key empty_value", []string{"unseal", key, "--in", sealed, "--key", "empty_value"}, ""},
		{
			"faas-cli sealed test",
			[]string{"unseal", vectorPath("faas-cli-sealed-test/key"), "--in", vectorPath("faas-cli-sealed-test/com.openfaas.secrets")},
			"api_key=sk-live-my-secret-key\nnpm_token=npm_AbC123\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runFnb(tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if stdout != tt.want {
				t.Errorf("stdout = %q\nwant     %q", stdout, tt.want)
			}
		})
	}
}

// keyFiles writes a new key pair as fnb keygen does: dir/name and
// dir/name.pub.
func keyFiles(t *testing.T, dir, name string) (string, secrets.KeyPair) {
	t.Helper()
	kp, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := secrets.WriteKeyFiles(p, kp); err != nil {
		t.Fatal(err)
	}
	return p, kp
}

func TestUnsealRotatedKeys(t *testing.T) {
	fresh, _ := keyFiles(t, t.TempDir(), "fresh")
	sealed := vectorPath("sealed/com.openfaas.secrets")

	code, stdout, stderr := runFnb("unseal", "--private-key", fresh, "--private-key", vectorPath("keys/key"), "--key", "pip_token", sealed)
	if code != 0 || stdout != "s3cr3t-shared-pip" {
		t.Errorf("ring(fresh, shared): exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	code, stdout, stderr = runFnb("unseal", "--private-key", fresh, sealed)
	if code != 1 {
		t.Errorf("wrong key: exit %d, want 1", code)
	}
	if stdout != "" {
		t.Errorf("wrong key printed %q", stdout)
	}
	if !strings.Contains(stderr, vectorKeyID) {
		t.Errorf("stderr %q should name key %s", stderr, vectorKeyID)
	}
}

func TestUnsealJSON(t *testing.T) {
	code, stdout, stderr := runFnb("unseal", vectorPath("keys/key"), "--in", vectorPath("sealed/com.openfaas.secrets"), "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("--json output %q: %v", stdout, err)
	}
	plain := vectorPlaintexts(t)
	for _, name := range []string{"pip_token", "db_url", "empty_value"} {
		if got[name] != string(plain[name]) {
			t.Errorf("%s = %q, want %q", name, got[name], plain[name])
		}
	}
	if _, ok := got["ca.crt"]; !ok || len(got) != 4 {
		t.Errorf("--json gave %d values", len(got))
	}
}

func TestUnsealErrors(t *testing.T) {
	key := vectorPath("keys/key")
	sealed := vectorPath("sealed/com.openfaas.secrets")
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad")
	if err := os.WriteFile(badKey, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing key name", []string{"unseal", key, "--in", sealed, "--key", "missing"}, `"missing" not found`},
		{"no private key", []string{"unseal", "--in", sealed}, "private key"},
		{"key file missing", []string{"unseal", filepath.Join(dir, "absent"), "--in", sealed}, filepath.Join(dir, "absent")},
		{"malformed key file", []string{"unseal", badKey, "--in", sealed}, badKey},
		{"sealed file missing", []string{"unseal", key, "--in", filepath.Join(dir, "none")}, filepath.Join(dir, "none")},
		{"not an envelope", []string{"unseal", key, "--in", key}, "envelope"},
		{"extra arguments", []string{"unseal", "--private-key", key, sealed, "extra"}, "extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runFnb(tt.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q should mention %q", stderr, tt.want)
			}
		})
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "k")
	code, stdout, stderr := runFnb("keygen", "-o", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	priv, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{path, priv, 0o600}, {path + ".pub", pub, 0o644}} {
		if len(f.data) != 44 || bytes.ContainsAny(f.data, "\r\n") {
			t.Errorf("%s = %q, want 44 base64 characters with no newline", f.path, f.data)
		}
		st, _ := os.Stat(f.path)
		if st.Mode().Perm() != f.mode {
			t.Errorf("%s mode %o, want %o", f.path, st.Mode().Perm(), f.mode)
		}
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %o, want 0700", st.Mode().Perm())
	}
	derived, err := secrets.PublicKey(priv)
	if err != nil || !bytes.Equal(derived, pub) {
		t.Errorf("public key file %q does not match the private key (%q, %v)", pub, derived, err)
	}

	// Same lines as faas-cli printed in keys/keygen-output.txt, for our path and key.
	lines := strings.SplitAfter(string(readVectorFile(t, "keys/keygen-output.txt")), "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "$ ") {
		t.Fatalf("unexpected keygen-output.txt: %q", lines)
	}
	want := strings.Join(lines[1:], "")
	want = strings.ReplaceAll(want, "keys/key", path)
	want = strings.ReplaceAll(want, vectorKeyID, string(pub[:8]))
	if stdout != want {
		t.Errorf("stdout = %q\nwant     %q", stdout, want)
	}

	// The pair works with the reference implementation.
	envelope, err := seal.Seal(pub, map[string][]byte{"a": []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := seal.Unseal(priv, envelope); err != nil || string(got["a"]) != "b" {
		t.Errorf("generated pair does not round-trip: %q, %v", got, err)
	}
}

func TestSeal(t *testing.T) {
	dir := t.TempDir()
	keyFile, kp := keyFiles(t, dir, "k")
	keyID := string(kp.Public[:8])
	binary := []byte{0x00, 0xff, '\r', '\n', 0x80, 'x'}
	binFile := filepath.Join(dir, "bin.dat")
	if err := os.WriteFile(binFile, binary, 0o600); err != nil {
		t.Fatal(err)
	}
	sharedPriv := readVectorFile(t, "keys/key")

	tests := []struct {
		name    string
		args    []string // "OUT" is replaced by the output path
		private []byte
		keyID   string
		want    map[string][]byte
	}{
		{
			"public-key flag",
			[]string{"--public-key", keyFile + ".pub", "--from-literal", "a=b=c", "--from-literal", "e=", "--from-file", "bin=" + binFile, "-o", "OUT"},
			kp.Private, keyID,
			map[string][]byte{"a": []byte("b=c"), "e": {}, "bin": binary},
		},
		{
			"faas-cli positional key",
			[]string{keyFile + ".pub", "--from-literal", "api_key=sk-live-1", "--output", "OUT"},
			kp.Private, keyID,
			map[string][]byte{"api_key": []byte("sk-live-1")},
		},
		{
			"from-file replaces literal",
			[]string{"--public-key", keyFile + ".pub", "--from-literal", "bin=literal", "--from-file", "bin=" + binFile, "-o", "OUT"},
			kp.Private, keyID,
			map[string][]byte{"bin": binary},
		},
		{
			"publickey JSON file",
			[]string{"--public-key", vectorPath("keys/publickey-response.json"), "--from-literal", "x=y", "-o", "OUT"},
			sharedPriv, vectorKeyID,
			map[string][]byte{"x": []byte("y")},
		},
		{
			"base64 value as key",
			[]string{"--public-key", string(readVectorFile(t, "keys/key.pub")), "--from-literal", "x=y", "-o", "OUT"},
			sharedPriv, vectorKeyID,
			map[string][]byte{"x": []byte("y")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, "out", tt.name)
			if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
				t.Fatal(err)
			}
			args := []string{"seal"}
			for _, a := range tt.args {
				if a == "OUT" {
					a = out
				}
				args = append(args, a)
			}
			code, stdout, stderr := runFnb(args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			wantOut := "Sealed " + strconv.Itoa(len(tt.want)) + " secret(s) to " + out + " (key ID: " + tt.keyID + ")\n"
			if stdout != wantOut {
				t.Errorf("stdout = %q, want %q", stdout, wantOut)
			}
			envelope, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
				t.Errorf("output mode %o, want 0600", st.Mode().Perm())
			}
			if id, _ := seal.KeyID(envelope); id != tt.keyID {
				t.Errorf("envelope key_id %q, want %q", id, tt.keyID)
			}
			got, err := seal.Unseal(tt.private, envelope)
			if err != nil {
				t.Fatalf("go-sdk Unseal: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("unsealed %d values, want %d", len(got), len(tt.want))
			}
			for name, w := range tt.want {
				if g, ok := got[name]; !ok || !bytes.Equal(g, w) {
					t.Errorf("%s = %q (present %v), want %q", name, g, ok, w)
				}
			}
		})
	}
}

func TestSealErrors(t *testing.T) {
	dir := t.TempDir()
	pub := vectorPath("keys/key.pub")
	out := filepath.Join(dir, "out")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no key", []string{"seal", "--from-literal", "a=b", "-o", out}, "public key"},
		{"no values", []string{"seal", "--public-key", pub, "-o", out}, "at least one"},
		{"empty name", []string{"seal", "--public-key", pub, "--from-literal", "=v", "-o", out}, "empty"},
		{"bad name", []string{"seal", "--public-key", pub, "--from-literal", "a/b=v", "-o", out}, "a/b"},
		{"from-file missing", []string{"seal", "--public-key", pub, "--from-file", "f=" + filepath.Join(dir, "absent"), "-o", out}, "absent"},
		{"bad key", []string{"seal", "--public-key", "not-a-key", "--from-literal", "a=b", "-o", out}, "public key"},
		{"missing output directory", []string{"seal", "--public-key", pub, "--from-literal", "a=b", "-o", filepath.Join(dir, "no", "such", "dir", "f")}, "no such"},
		{"two positional keys", []string{"seal", pub, pub, "--from-literal", "a=b", "-o", out}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runFnb(tt.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1 (stderr %q)", code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q should mention %q", stderr, tt.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("a failed seal wrote %s", out)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no args", nil, 2, "Usage"},
		{"help", []string{"--help"}, 2, "Usage"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"serve unknown function", []string{"serve", "nope"}, 1, `unknown function "nope"`},
		{"serve without function", []string{"serve"}, 1, "publickey-fn"},
		{"bad flag", []string{"keygen", "--bogus"}, 1, "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runFnb(tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q should mention %q", stderr, tt.want)
			}
		})
	}
}

// TestServePublicKey runs the real binary as a person or script would.
func TestServePublicKey(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the fnb binary")
	}
	bin := testenv.BuildFnb(t)
	tmp := t.TempDir()

	mount := filepath.Join(tmp, "secrets")
	if err := os.Mkdir(mount, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mount, "build-secrets-key"), readVectorFile(t, "keys/key"), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "serve", "publickey-fn", "--addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(),
		"secret_mount_path="+mount,
		"build_secrets_private_key_path=",
		"build_secrets_key_names=",
	)
	stderr := &testenv.SyncBuffer{} // the child writes it while the test may read it
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once the process has been waited for; waitErr is
	// its result.
	exited := make(chan struct{})
	var waitErr error
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	lineCh := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lineCh <- line
		_, _ = io.Copy(io.Discard, stdout)
		waitErr = cmd.Wait()
		close(exited)
	}()
	var line string
	select {
	case line = <-lineCh:
	case <-time.After(30 * time.Second):
		t.Fatalf("no address line within 30s; stderr %q", stderr.String())
	}
	const prefix = "serving publickey-fn on http://"
	if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, "\n") {
		t.Fatalf("first stdout line %q, want %q + ADDR", line, prefix)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(line, prefix), "\n")
	if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("address %q is not the bound port", addr)
	}

	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/publickey")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	client.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /publickey: %d %s", resp.StatusCode, body)
	}
	var got, want map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if err := json.Unmarshal(readVectorFile(t, "keys/publickey-response.json"), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /publickey = %v, want %v", got, want)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("after SIGTERM: %v (stderr %q)", waitErr, stderr.String())
		}
		if cmd.ProcessState.ExitCode() != 0 {
			t.Errorf("exit code %d, want 0", cmd.ProcessState.ExitCode())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20s after SIGTERM; stderr %q", stderr.String())
	}
}
