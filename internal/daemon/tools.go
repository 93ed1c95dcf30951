package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// systemDirs hold Debian's tools; runc and iptables are in /usr/sbin.
var systemDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// ToolsDir is where hack/install.sh puts what it builds: $FNB_TOOLS/bin,
// default ~/.cache/fnbuilder/bin.
func ToolsDir() string {
	base := os.Getenv("FNB_TOOLS")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			home = "/root"
		}
		base = filepath.Join(home, ".cache", "fnbuilder")
	}
	return filepath.Join(base, "bin")
}

// Find returns the absolute path of an executable from ToolsDir, $PATH,
// the system directories or Go's own install (/usr/local/go/bin), or ""
// when there is none.
func Find(name string) string {
	candidates := []string{filepath.Join(ToolsDir(), name)}
	if p, err := exec.LookPath(name); err == nil {
		candidates = append(candidates, p)
	}
	for _, d := range slices.Concat(systemDirs, []string{"/usr/local/go/bin"}) {
		candidates = append(candidates, filepath.Join(d, name))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			if abs, err := filepath.Abs(c); err == nil {
				return abs
			}
			return c
		}
	}
	return ""
}

// ChildPath is PATH for the daemons: dirs first, then ToolsDir and the
// system directories (buildkitd finds runc there, rootlesskit newuidmap).
func ChildPath(dirs ...string) string {
	return strings.Join(append(append(dirs, ToolsDir()), systemDirs...), ":")
}

// BaseEnv is the environment every daemon starts from: no proxies and no
// stray settings from the caller's shell.
func BaseEnv(extra ...string) []string {
	home := os.Getenv("HOME")
	if home == "" {
		home = "/root"
	}
	return append([]string{"PATH=" + ChildPath(), "HOME=" + home, "LANG=C.UTF-8"}, extra...)
}

// Install copies the executable src to dst unless dst has the same bytes,
// through a rename so that a running copy is never overwritten in place.
func Install(src, dst string) error {
	a, err := FileSHA256(src)
	if err != nil {
		return err
	}
	if b, err := FileSHA256(dst); err == nil && a == b {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// FileSHA256 is the hex SHA-256 of a file's bytes.
func FileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
