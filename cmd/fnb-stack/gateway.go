package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/openfaas/faas-provider/types"
)

// gatewayClient calls the gateway's REST API with the admin credentials.
type gatewayClient struct {
	base, user, pass string
}

func (s *Stack) gateway() (*gatewayClient, error) {
	user, err := s.readSecret("basic-auth-user")
	if err != nil {
		return nil, err
	}
	pass, err := s.readSecret("basic-auth-password")
	if err != nil {
		return nil, err
	}
	return &gatewayClient{base: gatewayURL, user: strings.TrimSpace(string(user)), pass: strings.TrimSpace(string(pass))}, nil
}

// do sends body (JSON unless it is []byte) and returns status and body.
func (g *gatewayClient) do(ctx context.Context, method, path string, body any, header http.Header) (int, []byte, http.Header, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return 0, nil, nil, err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, r)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.HasPrefix(path, "/system/") {
		req.SetBasicAuth(g.user, g.pass)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("gateway: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, out, resp.Header, err
}

// putSecret creates or updates a function secret (PUT, then POST on 404).
func (g *gatewayClient) putSecret(ctx context.Context, name string, value []byte) error {
	sec := types.Secret{Name: name, RawValue: value}
	code, body, _, err := g.do(ctx, http.MethodPut, "/system/secrets", sec, nil)
	if err != nil {
		return err
	}
	if code == http.StatusNotFound {
		code, body, _, err = g.do(ctx, http.MethodPost, "/system/secrets", sec, nil)
		if err != nil {
			return err
		}
	}
	if code/100 != 2 {
		return fmt.Errorf("gateway: secret %s: %d %s", name, code, strings.TrimSpace(string(body)))
	}
	return nil
}

// function returns a function's status; found is false on 404.
func (g *gatewayClient) function(ctx context.Context, name string) (st types.FunctionStatus, found bool, err error) {
	code, body, _, err := g.do(ctx, http.MethodGet, "/system/function/"+name, nil, nil)
	if err != nil {
		return st, false, err
	}
	switch code {
	case http.StatusOK:
		return st, true, json.Unmarshal(body, &st)
	case http.StatusNotFound:
		return st, false, nil
	default:
		return st, false, fmt.Errorf("gateway: GET /system/function/%s: %d %s", name, code, strings.TrimSpace(string(body)))
	}
}

// apply creates or updates a function (PUT, then POST on 404).
func (g *gatewayClient) apply(ctx context.Context, d types.FunctionDeployment) (string, error) {
	code, body, _, err := g.do(ctx, http.MethodPut, "/system/functions", d, nil)
	if err != nil {
		return "", err
	}
	action := "updated"
	if code == http.StatusNotFound {
		action = "created"
		code, body, _, err = g.do(ctx, http.MethodPost, "/system/functions", d, nil)
		if err != nil {
			return "", err
		}
	}
	if code/100 != 2 {
		return "", fmt.Errorf("gateway: deploy %s: %d %s", d.Service, code, strings.TrimSpace(string(body)))
	}
	return action, nil
}

// waitReady polls until the provider reports an available replica.
func (g *gatewayClient) waitReady(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		st, found, err := g.function(ctx, name)
		switch {
		case err != nil:
			last = err
		case !found:
			last = fmt.Errorf("function %s does not exist", name)
		case st.AvailableReplicas >= 1:
			return nil
		default:
			last = fmt.Errorf("function %s has no available replica yet", name)
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(250 * time.Millisecond):
		}
	}
}
