package handlers

import (
	"net/http"
	"strconv"
)

// StatusHeader carries a refusal's real HTTP status when it went out as
// the last line of a stream.
const StatusHeader = "X-Fnbuilder-Status"

// streamRefusals answers a streaming client's refusal as its stream's
// final line: 200, then the same {"status":"failed","error":..} object
// the refusal would have had as its body. faas-cli 0.18.8–0.18.12 panics
// on any other status when the build carries secrets, and faas-cli and
// go-sdk print only the status code otherwise; a final "failed" line they
// print, with its reason, and exit non-zero. The real status stays
// visible to operators in StatusHeader and in the requests metric (the
// writer outside this one counts it).
type streamRefusals struct {
	http.ResponseWriter
	wrote bool
}

func (s *streamRefusals) WriteHeader(code int) {
	if !s.wrote && code >= 400 {
		h := s.Header()
		h.Set(StatusHeader, strconv.Itoa(code))
		h.Set("Content-Type", "application/x-ndjson")
		code = http.StatusOK
	}
	s.wrote = true
	s.ResponseWriter.WriteHeader(code)
}

func (s *streamRefusals) Write(p []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and the deadlines.
func (s *streamRefusals) Unwrap() http.ResponseWriter { return s.ResponseWriter }
