package deploy

import (
	"net/http"
	"net/url"
	"time"

	sdk "github.com/openfaas/go-sdk"
)

// gatewayTimeout bounds one call to the gateway: a deploy is quick, a hung
// gateway must not hold a build slot.
const gatewayTimeout = time.Minute

// Credentials returns the gateway's basic-auth user and password; an empty
// user means none.
type Credentials func() (user, password string, err error)

// Connect returns what makes a go-sdk client for the gateway at rawURL.
// Credentials are read per client, that is per deploy, so that a rotated
// secret is used without a restart.
func Connect(rawURL string, credentials Credentials) func() (Gateway, error) {
	return func() (Gateway, error) {
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, err
		}
		user, password, err := credentials()
		if err != nil {
			return nil, err
		}
		var auth sdk.ClientAuth
		if user != "" {
			auth = &sdk.BasicAuth{Username: user, Password: password}
		}
		return sdk.NewClient(u, auth, &http.Client{Timeout: gatewayTimeout}), nil
	}
}
