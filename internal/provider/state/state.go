// Package state keeps what the provider must remember across restarts, as
// plain files: functions/<name>.json under the state directory (the
// deployment request, desired replicas, creation time, address) and one
// file per secret (its bytes, mode 0644 in a 0700 directory) in the secrets directory. Writes of function records are atomic
// (temp file + rename); secrets are rewritten in place so that the bind
// mounts of running containers see the new value.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/openfaas/faas-provider/types"
)

var (
	// ErrNotFound is returned for a function or secret that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when creating what already exists.
	ErrExists = errors.New("already exists")
)

// fileName guards the file system: names become file names, so no path
// separators, no leading dot. Request validation is stricter.
var fileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// Function is one deployed function as the provider remembers it.
type Function struct {
	Deployment types.FunctionDeployment `json:"deployment"`
	// Replicas is the desired count: 0 or 1.
	Replicas  uint64    `json:"replicas"`
	CreatedAt time.Time `json:"createdAt"`
	// IP is the address CNI gave the function's network namespace.
	IP string `json:"ip,omitempty"`
}

// Name is the function's name.
func (f Function) Name() string { return f.Deployment.Service }

// Store is the state directory.
type Store struct {
	dir     string
	secrets string
}

// Open creates (if needed) and opens the state directory. Secrets live in
// secretsDir, or in dir/secrets when it is "".
func Open(dir, secretsDir string) (*Store, error) {
	if secretsDir == "" {
		secretsDir = filepath.Join(dir, "secrets")
	}
	for _, d := range []string{dir, filepath.Join(dir, "functions"), secretsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	return &Store{dir: dir, secrets: secretsDir}, nil
}

// At refers to a state directory without creating anything, for teardown.
func At(dir, secretsDir string) *Store {
	if secretsDir == "" {
		secretsDir = filepath.Join(dir, "secrets")
	}
	return &Store{dir: dir, secrets: secretsDir}
}

// SecretsDir is where the secret files are.
func (s *Store) SecretsDir() string { return s.secrets }

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) functionPath(name string) (string, error) {
	if !fileName.MatchString(name) {
		return "", fmt.Errorf("invalid name %q", name)
	}
	return filepath.Join(s.dir, "functions", name+".json"), nil
}

// SaveFunction writes f atomically.
func (s *Store) SaveFunction(f Function) error {
	p, err := s.functionPath(f.Name())
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode function %s: %w", f.Name(), err)
	}
	return writeAtomic(p, append(b, '\n'))
}

// Function reads one function record.
func (s *Store) Function(name string) (Function, error) {
	p, err := s.functionPath(name)
	if err != nil {
		return Function{}, fmt.Errorf("function %s: %w", name, ErrNotFound)
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Function{}, fmt.Errorf("function %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Function{}, fmt.Errorf("read function %s: %w", name, err)
	}
	var f Function
	if err := json.Unmarshal(b, &f); err != nil {
		return Function{}, fmt.Errorf("decode %s: %w", p, err)
	}
	if f.Name() != name {
		return Function{}, fmt.Errorf("%s holds function %q", p, f.Name())
	}
	return f, nil
}

// Functions reads all function records, sorted by name.
func (s *Store) Functions() ([]Function, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "functions"))
	if err != nil {
		return nil, fmt.Errorf("list functions: %w", err)
	}
	var out []Function
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || !fileName.MatchString(name) {
			continue
		}
		f, err := s.Function(name)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// DeleteFunction removes a function record; a missing one is ErrNotFound.
func (s *Store) DeleteFunction(name string) error {
	p, err := s.functionPath(name)
	if err != nil {
		return fmt.Errorf("function %s: %w", name, ErrNotFound)
	}
	if err := os.Remove(p); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("function %s: %w", name, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("delete function %s: %w", name, err)
	}
	return nil
}

// SecretPath is where secret name's file lives (whether or not it exists).
func (s *Store) SecretPath(name string) string {
	return filepath.Join(s.secrets, name)
}

// secretMode lets a function read its secrets whatever user its image runs
// as (the template's is the non-root `app`): the bind mount shows the
// file's own mode, as Kubernetes' default secret volume mode (0644) and
// faasd do. The secrets directory (0700) keeps them from the host's other
// users.
const secretMode = 0o644

// CreateSecret stores a new secret; an existing one is ErrExists.
func (s *Store) CreateSecret(name string, value []byte) error {
	if !fileName.MatchString(name) {
		return fmt.Errorf("invalid secret name %q", name)
	}
	f, err := os.OpenFile(s.SecretPath(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, secretMode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("secret %s: %w", name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create secret %s: %w", name, err)
	}
	if err := writeSecret(f, value); err != nil {
		os.Remove(s.SecretPath(name))
		return fmt.Errorf("write secret %s: %w", name, err)
	}
	return nil
}

// UpdateSecret rewrites an existing secret in place (same inode, so running
// containers that bind-mount it see the new value); a missing one is
// ErrNotFound.
func (s *Store) UpdateSecret(name string, value []byte) error {
	if !fileName.MatchString(name) {
		return fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	f, err := os.OpenFile(s.SecretPath(name), os.O_WRONLY|os.O_TRUNC, secretMode)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("open secret %s: %w", name, err)
	}
	if err := writeSecret(f, value); err != nil {
		return fmt.Errorf("write secret %s: %w", name, err)
	}
	return nil
}

// writeSecret sets f's mode (whatever the umask, or an older provider's
// 0600), writes value and closes f.
func writeSecret(f *os.File, value []byte) error {
	if err := f.Chmod(secretMode); err != nil {
		f.Close()
		return err
	}
	return writeClose(f, value)
}

// writeClose writes value to f and closes it, with the first error.
func writeClose(f *os.File, value []byte) error {
	_, err := f.Write(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Secret reads a secret's value.
func (s *Store) Secret(name string) ([]byte, error) {
	if !fileName.MatchString(name) {
		return nil, fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	b, err := os.ReadFile(s.SecretPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read secret %s: %w", name, err)
	}
	return b, nil
}

// SecretExists reports whether secret name exists.
func (s *Store) SecretExists(name string) bool {
	if !fileName.MatchString(name) {
		return false
	}
	fi, err := os.Stat(s.SecretPath(name))
	return err == nil && fi.Mode().IsRegular()
}

// SecretNames lists the secrets, sorted.
func (s *Store) SecretNames() ([]string, error) {
	entries, err := os.ReadDir(s.secrets)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && fileName.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// DeleteSecret removes a secret; a missing one is ErrNotFound.
func (s *Store) DeleteSecret(name string) error {
	if !fileName.MatchString(name) {
		return fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	if err := os.Remove(s.SecretPath(name)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("secret %s: %w", name, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("delete secret %s: %w", name, err)
	}
	return nil
}

// ErrLocked is returned by Lock when another process holds the lock.
var ErrLocked = errors.New("state dir is in use by another fnb-provider")

// Lock takes an exclusive lock on the state directory (a flock on
// dir/provider.lock), so that two providers — or a provider and a
// teardown — never work on the same functions at once. It does not wait.
// The lock goes with the process; unlock releases it earlier.
func Lock(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	p := filepath.Join(dir, "provider.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}
