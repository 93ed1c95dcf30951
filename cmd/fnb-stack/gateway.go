package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openfaas/faas-provider/types"
	sdk "github.com/openfaas/go-sdk"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
)

// gateway is go-sdk's client of the gateway's /system API, with the admin
// credentials.
func (s *Stack) gateway() (*sdk.Client, error) {
	user, err := s.readSecret("basic-auth-user")
	if err != nil {
		return nil, err
	}
	pass, err := s.readSecret("basic-auth-password")
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(gatewayURL)
	if err != nil {
		return nil, err
	}
	auth := &sdk.BasicAuth{Username: strings.TrimSpace(string(user)), Password: strings.TrimSpace(string(pass))}
	return sdk.NewClient(u, auth, httpClient), nil
}

// invoke calls a function through the gateway (/function/..., /async-function/...).
func invoke(ctx context.Context, method, path string, body []byte, header http.Header) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, gatewayURL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("gateway: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, out, resp.Header, err
}

// putSecret creates or updates a function secret.
func putSecret(ctx context.Context, g *sdk.Client, name string, value []byte) error {
	sec := types.Secret{Name: name, RawValue: value}
	code, err := g.UpdateSecret(ctx, sec)
	if code == http.StatusNotFound {
		_, err = g.CreateSecret(ctx, sec)
	}
	if err != nil {
		return fmt.Errorf("gateway: secret %s: %w", name, err)
	}
	return nil
}

// waitReady polls until the provider reports an available replica.
func waitReady(ctx context.Context, g *sdk.Client, name string, timeout time.Duration) error {
	return daemon.Poll(ctx, timeout, 200*time.Millisecond, func() error {
		st, found, err := deploy.Find(ctx, g, "", name)
		switch {
		case err != nil:
			return fmt.Errorf("gateway: %w", err)
		case !found:
			return fmt.Errorf("function %s does not exist", name)
		case st.AvailableReplicas < 1:
			return fmt.Errorf("function %s has no available replica yet", name)
		}
		return nil
	})
}

// summariseFunctions is one line per function.
func summariseFunctions(fns []types.FunctionStatus) string {
	if len(fns) == 0 {
		return " none"
	}
	var b strings.Builder
	for _, f := range fns {
		state := "ready"
		if f.AvailableReplicas < 1 {
			state = "NOT READY"
		}
		fmt.Fprintf(&b, "\n  %-16s %-9s %s", f.Name, state, f.Image)
	}
	return b.String()
}
