package provider

import (
	"fmt"
	"net/http"
)

// MakeLogsHandler answers GET /system/logs with 501: this provider does
// not stream logs. Each function's stdout and stderr go to a file instead,
// named in the answer.
func MakeLogsHandler(logDir string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		msg := fmt.Sprintf("logs are not supported by %s: a function's output is in %s/<function>.log on the provider's host", ProviderName, logDir)
		http.Error(w, msg, http.StatusNotImplemented)
	}
}
