package callback

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// A queue-worker's POST arrives on C with its headers and body.
func TestReceiver(t *testing.T) {
	r, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	req, _ := http.NewRequest(http.MethodPost, r.URL, strings.NewReader(`{"status":"success"}`))
	req.Header.Set("X-Call-Id", "call-1")
	req.Header.Set("X-Function-Status", "200")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	select {
	case c := <-r.C:
		if c.CallID() != "call-1" || c.Status() != "200" || string(c.Body) != `{"status":"success"}` || c.At.IsZero() {
			t.Errorf("callback %+v", c)
		}
	case <-time.After(testenv.HangGuard):
		t.Fatal("hang guard: no callback on C")
	}
}
