package state

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/types"
)

func TestFunctionRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"com.openfaas.scale.min": "1"}
	want := Function{
		Deployment: types.FunctionDeployment{
			Service:    "hello",
			Image:      "127.0.0.1:5000/fn/hello:1",
			EnvProcess: "cat",
			EnvVars:    map[string]string{"A": "1"},
			Secrets:    []string{"token"},
			Labels:     &labels,
			Limits:     &types.FunctionResources{Memory: "64Mi"},
		},
		Replicas:  1,
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		IP:        "10.62.0.2",
	}
	if err := s.SaveFunction(want); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveFunction(Function{Deployment: types.FunctionDeployment{Service: "another", Image: "x"}}); err != nil {
		t.Fatal(err)
	}

	// A new Store on the same dir sees the same records (a restart).
	s2, err := Open(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Function("hello")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	all, err := s2.Functions()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Name() != "another" || all[1].Name() != "hello" {
		t.Fatalf("Functions() = %+v", all)
	}
	fi, err := os.Stat(filepath.Join(dir, "functions", "hello.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, want 0600", fi.Mode().Perm())
	}

	if err := s2.DeleteFunction("hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Function("hello"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v, want ErrNotFound", err)
	}
	if err := s2.DeleteFunction("hello"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := s2.Function("../../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("path name: %v, want ErrNotFound", err)
	}
	// Temp files from an interrupted write are not records.
	os.WriteFile(filepath.Join(dir, "functions", ".x.json.123"), []byte("{"), 0o600)
	if all, err := s2.Functions(); err != nil || len(all) != 1 {
		t.Fatalf("Functions() with temp file = %v, %v", all, err)
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "elsewhere")
	s, err := Open(dir, secrets)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSecret("token", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSecret("token", []byte("two")); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	p := s.SecretPath("token")
	if filepath.Dir(p) != secrets {
		t.Fatalf("secret at %s, want under %s", p, secrets)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	// Readable by a function's non-root user through the bind mount; the
	// directory keeps it from the host's other users.
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("secret mode %v, want 0644", fi.Mode().Perm())
	}
	if di, err := os.Stat(secrets); err != nil {
		t.Error(err)
	} else if di.Mode().Perm() != 0o700 {
		t.Errorf("secrets directory mode %v, want 0700", di.Mode().Perm())
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	// A secret an older provider wrote 0600 becomes readable when updated.
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}

	if err := s.UpdateSecret("token", []byte("three")); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Secret("token"); err != nil || string(b) != "three" {
		t.Fatalf("Secret = %q, %v", b, err)
	}
	fi, _ = os.Stat(p)
	if fi.Sys().(*syscall.Stat_t).Ino != ino {
		t.Errorf("update replaced the file: a bind mount of it would keep the old value")
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("updated secret mode %v, want 0644", fi.Mode().Perm())
	}
	if err := s.UpdateSecret("missing", []byte("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v, want ErrNotFound", err)
	}
	if err := s.CreateSecret("../escape", []byte("x")); err == nil {
		t.Fatal("created a secret named ../escape")
	}
	s.CreateSecret("a-first", []byte("x"))
	if names, err := s.SecretNames(); err != nil || !reflect.DeepEqual(names, []string{"a-first", "token"}) {
		t.Fatalf("SecretNames = %v, %v", names, err)
	}
	if !s.SecretExists("token") || s.SecretExists("nope") {
		t.Fatal("SecretExists wrong")
	}
	if err := s.DeleteSecret("token"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSecret("token"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	unlock()
	unlock2, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}
