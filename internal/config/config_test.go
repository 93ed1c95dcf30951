package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

func TestDuration(t *testing.T) {
	const def = 7 * time.Second
	tests := []struct {
		value   string
		want    time.Duration
		wantErr bool
	}{
		{"", def, false},
		{"   ", def, false},
		{"300", 300 * time.Second, false},
		{" 300 ", 300 * time.Second, false},
		{"0", 0, false},
		{"5m", 5 * time.Minute, false},
		{"1m30s", 90 * time.Second, false},
		{"250ms", 250 * time.Millisecond, false},
		{"x", 0, true},
		{"5 minutes", 0, true},
		{"1.5", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := FromMap(map[string]string{"write_timeout": tt.value}).Duration("write_timeout", def)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Duration(%q) = %v, want an error", tt.value, got)
				}
				if !strings.Contains(err.Error(), "write_timeout") {
					t.Errorf("error %q should name the setting", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Duration(%q): %v", tt.value, err)
			}
			if got != tt.want {
				t.Errorf("Duration(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
}

func TestIntAndBool(t *testing.T) {
	c := FromMap(map[string]string{"n": "42", "bad": "4x", "yes": "true", "one": "1", "no": "nope"})
	if n, err := c.Int("n", 1); err != nil || n != 42 {
		t.Errorf("Int(n) = %d, %v", n, err)
	}
	if n, err := c.Int("unset", 9); err != nil || n != 9 {
		t.Errorf("Int(unset) = %d, %v", n, err)
	}
	if _, err := c.Int("bad", 1); err == nil {
		t.Error("Int(bad): no error")
	}
	for _, name := range []string{"yes", "one"} {
		if b, err := c.Bool(name, false); err != nil || !b {
			t.Errorf("Bool(%s) = %v, %v", name, b, err)
		}
	}
	if b, err := c.Bool("unset", true); err != nil || !b {
		t.Errorf("Bool(unset) = %v, %v", b, err)
	}
	if _, err := c.Bool("no", false); err == nil {
		t.Error("Bool(no): no error")
	}
}

func TestList(t *testing.T) {
	def := []string{"d"}
	tests := []struct {
		value string
		want  []string
	}{
		{"", def},
		{"a", []string{"a"}},
		{"a,b", []string{"a", "b"}},
		{" a , b ,, c ,", []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got := FromMap(map[string]string{"l": tt.value}).List("l", def)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("List(%q) = %q, want %q", tt.value, got, tt.want)
			}
		})
	}
}

func TestSecretPath(t *testing.T) {
	if got, want := FromMap(nil).SecretPath("payload-secret"), "/var/openfaas/secrets/payload-secret"; got != want {
		t.Errorf("default SecretPath = %q, want %q", got, want)
	}
	c := FromMap(map[string]string{"secret_mount_path": "/tmp/s/"})
	if got, want := c.SecretPath("build-secrets-key"), "/tmp/s/build-secrets-key"; got != want {
		t.Errorf("SecretPath with secret_mount_path = %q, want %q", got, want)
	}
	if got, want := c.PayloadSecretPath(), "/tmp/s/payload-secret"; got != want {
		t.Errorf("PayloadSecretPath = %q, want %q", got, want)
	}
	c = FromMap(map[string]string{"secret_mount_path": "/tmp/s", "payload_secret_name": "hmac"})
	if got, want := c.PayloadSecretPath(), "/tmp/s/hmac"; got != want {
		t.Errorf("PayloadSecretPath with payload_secret_name = %q, want %q", got, want)
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s"), []byte("value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := FromMap(map[string]string{"secret_mount_path": dir})
	data, err := c.ReadSecret("s")
	if err != nil || string(data) != "value\n" {
		t.Errorf("ReadSecret = %q, %v", data, err)
	}
	_, err = c.ReadSecret("absent")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "absent")) {
		t.Errorf("ReadSecret(absent) error %v should name the path", err)
	}
}

func TestPrivateKeyPaths(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"default", nil, []string{"/var/openfaas/secrets/build-secrets-key"}},
		{"mount path", map[string]string{"secret_mount_path": "/s"}, []string{"/s/build-secrets-key"}},
		{
			"rotation list",
			map[string]string{"secret_mount_path": "/s", "build_secrets_key_names": "build-secrets-key, build-secrets-key-old"},
			[]string{"/s/build-secrets-key", "/s/build-secrets-key-old"},
		},
		{
			"pro-builder path",
			map[string]string{"build_secrets_private_key_path": "/etc/builder/key"},
			[]string{"/etc/builder/key"},
		},
		{
			"path override keeps old keys",
			map[string]string{"secret_mount_path": "/s", "build_secrets_key_names": "new,old", "build_secrets_private_key_path": "/k/current"},
			[]string{"/k/current", "/s/old"},
		},
		{
			"blank list falls back to the default name",
			map[string]string{"secret_mount_path": "/s", "build_secrets_key_names": " , "},
			[]string{"/s/build-secrets-key"},
		},
		{
			"blank list with path override",
			map[string]string{"build_secrets_key_names": ",", "build_secrets_private_key_path": "/k/current"},
			[]string{"/k/current"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FromMap(tt.env).PrivateKeyPaths()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("PrivateKeyPaths = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKeyRing(t *testing.T) {
	dir := t.TempDir()
	key, err := os.ReadFile("../../../shared/vectors/keys/key")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "build-secrets-key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	ring, err := secrets.LoadKeyRing(FromMap(map[string]string{"secret_mount_path": dir}).PrivateKeyPaths()...)
	if err != nil {
		t.Fatal(err)
	}
	if id := ring.Current().ID; id != "7OoESESw" {
		t.Errorf("key id %q, want 7OoESESw", id)
	}
	_, err = secrets.LoadKeyRing(FromMap(map[string]string{"secret_mount_path": dir, "build_secrets_key_names": "build-secrets-key,gone"}).PrivateKeyPaths()...)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "gone")) {
		t.Errorf("missing rotated key: error %v should name its path", err)
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv("fnb_config_test_setting", " from-env ")
	if got := FromEnv().String("fnb_config_test_setting", "def"); got != "from-env" {
		t.Errorf("String = %q", got)
	}
	if got := FromEnv().String("fnb_config_test_unset", "def"); got != "def" {
		t.Errorf("String(unset) = %q", got)
	}
}
