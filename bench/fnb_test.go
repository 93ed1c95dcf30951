package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

// fnbProc is `fnb serve build-fn` running as its own process.
type fnbProc struct {
	url     string
	pid     int
	key     []byte // payload secret
	workDir string
	logPath string
	cmd     *exec.Cmd
}

// startFnb serves build-fn with the given settings (environment
// variables, as the template reads them) and fresh secrets.
func startFnb(t *testing.T, bin string, settings map[string]string) *fnbProc {
	t.Helper()
	dir := t.TempDir()
	secretsDir := filepath.Join(dir, "secrets")
	workDir := filepath.Join(dir, "work")
	for _, d := range []string{secretsDir, workDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	key := []byte("bench-" + strconv.FormatInt(time.Now().UnixNano(), 36))
	kp, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secretsDir, config.PayloadSecretName), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secretsDir, config.BuildSecretsKeyName), kp.Private, 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"TMPDIR=" + dir,
		"secret_mount_path=" + secretsDir,
		"work_dir=" + workDir,
		"results_dir=" + filepath.Join(dir, "results"),
		// As in stack.yaml: builds may take long.
		"build_timeout=30m",
		"read_timeout=31m",
		"write_timeout=31m10s",
		"healthcheck_interval=2s",
	}
	for k, v := range settings {
		env = append(env, k+"="+v)
	}
	logPath := filepath.Join(dir, "build-fn.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "build-fn", "--addr", "127.0.0.1:0")
	cmd.Env = env
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("fnb serve build-fn did not start: %v\n%s", err, log)
	}
	_, url, ok := strings.Cut(strings.TrimSpace(line), " on ")
	if !ok {
		t.Fatalf("unexpected first line %q", line)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return &fnbProc{url: url, pid: cmd.Process.Pid, key: key, workDir: workDir, logPath: logPath, cmd: cmd}
}

// procStatus reads a kB field (VmRSS, VmHWM) of /proc/PID/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// resetPeak resets the process's VmHWM to its current RSS (clear_refs 5).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// buildResult is how a streamed build ended.
type buildResult struct {
	final progress.Result
	log   string
	code  int
}

// postBuild sends a signed request for NDJSON and reads it to the end.
// size < 0 means unknown (chunked).
func postBuild(ctx context.Context, client *http.Client, url string, body io.Reader, size int64, sig string) (buildResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/build", body)
	if err != nil {
		return buildResult{}, err
	}
	if size >= 0 {
		req.ContentLength = size
	}
	req.Header.Set("X-Build-Signature", sig)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/x-ndjson")
	res, err := client.Do(req)
	if err != nil {
		return buildResult{}, err
	}
	defer res.Body.Close()
	out := buildResult{code: res.StatusCode}
	if res.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(res.Body)
		return out, fmt.Errorf("status %d: %s", res.StatusCode, bytes.TrimSpace(data))
	}
	var log strings.Builder
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		var r progress.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return out, fmt.Errorf("bad line %q: %v", sc.Text(), err)
		}
		for _, l := range r.Log {
			log.WriteString(l + "\n")
		}
		out.final = r
	}
	out.log = log.String()
	if err := sc.Err(); err != nil {
		return out, err
	}
	if out.final.Status != progress.Success {
		return out, fmt.Errorf("build %s: %s\n%s", out.final.Status, out.final.Error, tail(out.log, 3000))
	}
	return out, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// receiveSeconds is build-fn's fnbuilder_request_receive_seconds_sum: the
// time it has spent receiving and verifying request bodies.
func (f *fnbProc) receiveSeconds(t *testing.T) float64 {
	t.Helper()
	res, err := http.Get(f.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	const name = "fnbuilder_request_receive_seconds_sum "
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			sum, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metrics: %q: %v", sc.Text(), err)
			}
			return sum
		}
	}
	t.Fatalf("build-fn's /metrics has no %s(%v)", name, sc.Err())
	return 0
}
