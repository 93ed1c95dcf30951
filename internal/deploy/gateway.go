package deploy

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	sdk "github.com/openfaas/go-sdk"

	"github.com/fnbuilder/fnbuilder/internal/config"
)

// gatewayTimeout bounds one call to the gateway: a deploy is quick, a hung
// gateway must not hold a build slot.
const gatewayTimeout = time.Minute

// NewGateway is a go-sdk client for gateway_url, with basic auth from the
// basic-auth-user and basic-auth-password secrets when they are mounted.
// Credentials are read per call so that a rotated secret is used without a
// restart.
func NewGateway(cfg config.Config) (Gateway, error) {
	u, err := url.Parse(cfg.String("gateway_url", "http://gateway.openfaas:8080"))
	if err != nil {
		return nil, err
	}
	var auth sdk.ClientAuth
	if user, err := cfg.ReadSecret(cfg.String("gateway_user_secret", "basic-auth-user")); err == nil {
		pass, err := cfg.ReadSecret(cfg.String("gateway_password_secret", "basic-auth-password"))
		if err != nil {
			return nil, err
		}
		auth = &sdk.BasicAuth{Username: strings.TrimSpace(string(user)), Password: strings.TrimSpace(string(pass))}
	}
	return sdk.NewClient(u, auth, &http.Client{Timeout: gatewayTimeout}), nil
}
