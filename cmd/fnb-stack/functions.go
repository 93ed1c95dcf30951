package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/deploy"
)

// specAnnotation carries a hash of what the stack deployed (spec and image
// digest): an unchanged function is left running on a second `up`.
const specAnnotation = "fnbuilder.dev/stack-spec"

const secretsMount = "/var/openfaas/secrets/"

// functionDeployment is how the stack runs each fnbuilder function: its
// template image (of-watchdog in front of the handler) with stack.yaml's
// settings for this machine.
func (s *Stack) functionDeployment(fn string) types.FunctionDeployment {
	env := map[string]string{
		// The watchdog and the handler drain for healthcheck_interval on
		// SIGTERM; keep `make down` quick.
		"healthcheck_interval": "1s",
	}
	var secrets []string
	switch fn {
	case "publickey-fn", "seal-fn":
		secrets = []string{"build-secrets-key"}
	case "build-fn":
		secrets = []string{"payload-secret", "build-secrets-key", "buildkit-tls-ca", "buildkit-tls-cert", "buildkit-tls-key",
			"basic-auth-user", "basic-auth-password"}
		for k, v := range map[string]string{
			"buildkit_url":             "tcp://" + buildkitTCPAddr,
			"buildkit_tls_ca":          secretsMount + "buildkit-tls-ca",
			"buildkit_tls_cert":        secretsMount + "buildkit-tls-cert",
			"buildkit_tls_key":         secretsMount + "buildkit-tls-key",
			"buildkit_tls_server_name": bridgeIP,
			// A streamed build passes the watchdog (exec, read and write
			// timeouts) and the gateway (15m): each allows more than
			// build_timeout, as in stack.yaml.
			"build_timeout": "10m",
			"exec_timeout":  "11m",
			"read_timeout":  "11m",
			"write_timeout": "11m10s",
			// The watchdog's /_/ready asks build-fn's /ready.
			"ready_path":  "/ready",
			"work_dir":    "/tmp",
			"gateway_url": gatewayFromFunctions,
			// Not max_inflight: the watchdog would answer 429 itself.
			"max_builds": "2",
			// Retries (waits 2, 4, 8, 16 s) outlast a buildkitd that
			// `make up` brings back while a build waits.
			"build_retries": "5",
			"retry_backoff": "2s",
		} {
			env[k] = v
		}
		if s.plainHTTPRegistry() {
			env["insecure_registries"] = registryAddr
		} else {
			secrets = append(secrets, "registry-config") // push credentials; TLS is buildkitd's
		}
	case "deploy-fn":
		secrets = []string{"payload-secret", "basic-auth-user", "basic-auth-password"}
		for k, v := range map[string]string{"gateway_url": gatewayFromFunctions,
			"exec_timeout": "2m", "read_timeout": "2m", "write_timeout": "2m10s"} {
			env[k] = v
		}
	}
	return types.FunctionDeployment{
		Service: fn,
		Image:   functionImage(fn),
		EnvVars: env,
		Secrets: secrets,
		Labels:  &map[string]string{"com.openfaas.scale.max": "1", "fnbuilder.dev/stack": "true"},
	}
}

// deployFunctions uploads the secrets and deploys the four functions
// through the gateway, then waits until each is ready.
func (s *Stack) deployFunctions(ctx context.Context, digests map[string]string) error {
	g, err := s.gateway()
	if err != nil {
		return err
	}
	t0 := time.Now()
	for _, name := range functionSecrets {
		b, err := s.readSecret(name)
		if err != nil {
			return err
		}
		if err := putSecret(ctx, g, name, b); err != nil {
			return err
		}
	}
	s.logf("secrets          %d function secrets set through the gateway (%.1fs)", len(functionSecrets), time.Since(t0).Seconds())

	for _, fn := range functionNames {
		t1 := time.Now()
		d := s.functionDeployment(fn)
		spec, _ := json.Marshal(d)
		hash := sha256Hex(string(spec) + "\n" + digests[fn])
		d.Annotations = &map[string]string{specAnnotation: hash}

		st, found, err := deploy.Find(ctx, g, "", fn)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		action := "unchanged"
		if !found || st.Annotations == nil || (*st.Annotations)[specAnnotation] != hash {
			// The builder's own functions: not a tenant's deploy.
			if action, err = deploy.CreateOrUpdate(ctx, g, d); err != nil {
				return fmt.Errorf("gateway: deploy %s: %w\n  provider log: %s", fn, err, s.logPath("provider"))
			}
		}
		if err := waitReady(ctx, g, fn, 2*time.Minute); err != nil {
			return fmt.Errorf("function %s not ready: %v\n  its log: %s\n  provider log: %s", fn, err, s.functionLog(fn), s.logPath("provider"))
		}
		s.logf("function         %-12s %s, ready (%.1fs)", fn, action, time.Since(t1).Seconds())
	}
	return nil
}

// functionIP is the address the provider gave a function on the bridge.
func (s *Stack) functionIP(fn string) (string, error) {
	b, err := os.ReadFile(filepath.Join(s.providerState(), "functions", fn+".json"))
	if err != nil {
		return "", err
	}
	var rec struct {
		IP string `json:"ip"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return "", err
	}
	if rec.IP == "" {
		return "", fmt.Errorf("function %s has no address yet", fn)
	}
	return rec.IP, nil
}
