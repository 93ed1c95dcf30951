package provider

import (
	"errors"
	"fmt"
	"log"
	"net/http"

	"github.com/fnbuilder/fnbuilder/internal/provider/state"
	"github.com/fnbuilder/fnbuilder/internal/provider/supervisor"
)

// errBadRequest marks request validation failures.
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// statusOf is the one place errors become HTTP status codes.
func statusOf(err error) int {
	switch {
	case errors.Is(err, errBadRequest), errors.Is(err, supervisor.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, supervisor.ErrNotFound), errors.Is(err, state.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, supervisor.ErrExists), errors.Is(err, state.ErrExists), errors.Is(err, supervisor.ErrInUse):
		return http.StatusConflict
	default:
		return http.StatusInternalServerError
	}
}

// writeError answers with err's status and message; server-side failures
// are logged too.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	if code >= 500 {
		log.Printf("%s %s: %v", r.Method, r.URL.Path, err)
	}
	http.Error(w, err.Error(), code)
}
