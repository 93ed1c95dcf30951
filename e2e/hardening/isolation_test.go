package hardening

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestContextIsolation: two requests, one after the other on one builder
// and one buildkitd, carry a file at the same path with the same size,
// mode and mtime but different bytes (mtimes are easy to match: a fixed
// SOURCE_DATE_EPOCH, or a tar made by a reproducible tool). The second
// image must hold the second request's bytes. BuildKit keeps one
// incremental copy of the "context" local source for every client of the
// daemon and does not re-send a file whose metadata matches that copy, so
// a builder that passes client mtimes through lets one request's build
// read another's files.
func TestContextIsolation(t *testing.T) {
	s := startStack(t)
	b := s.builderOn(t, nil)
	mtime := time.Unix(1700000000, 0)
	dockerfile := "FROM " + s.Base + "\nCOPY data.txt /data.txt\n"
	request := func(image, content string) []byte {
		df := testenv.File("context/Dockerfile", dockerfile)
		df.Header.ModTime = mtime
		data := testenv.File("context/data.txt", content)
		data.Header.ModTime = mtime
		d := testenv.Dir("context/")
		d.Header.ModTime = mtime
		return testenv.BuildTar(t, d, df, data, testenv.ConfigEntry(t, map[string]any{"image": image}))
	}
	first := "tenant-a-private-" + testenv.RandomHex(t, 16)
	second := "tenant-b-guessed-" + strings.Repeat("0", len(first)-len("tenant-b-guessed-"))
	if len(first) != len(second) {
		t.Fatal("the two contents must have the same size")
	}
	for _, c := range []struct{ repo, content string }{{"tenant-a", first}, {"tenant-b", second}} {
		body := request(s.Reg.Addr+"/"+c.repo+":1", c.content)
		fin, logs := final(t, testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(b.keys.payload, body, true)))
		if fin.Status != progress.Success {
			t.Fatalf("%s: %+v\n%s", c.repo, fin, logs)
		}
	}
	got := string(testenv.ImageFile(t, s.Reg, "tenant-b", "1", "data.txt"))
	if got != second {
		leaked := ""
		if got == first {
			leaked = " — the first request's file"
		}
		t.Fatalf("the second request's image holds %q, want its own %q%s", got, second, leaked)
	}
}

// TestConcurrentContextIsolation: 12 requests sent at the same moment to
// one builder and one buildkitd, all for the same image repository (so the
// same SharedKey: nothing but the files' own bytes tells their contexts
// apart), each carrying data.txt with the same path, size, mode and client
// mtime but its own bytes; then 12 more the same way, which find the first
// round's incremental copies of the context free to reuse. Every pushed
// image must hold its own request's bytes. Files written in the same clock
// tick get identical mtimes, so an unpack with fresh mtimes could not pass
// this; mtimes derived from the bytes do.
func TestConcurrentContextIsolation(t *testing.T) {
	const n, rounds = 12, 2
	s := startStack(t)
	b := s.builderOn(t, nil)
	mtime := time.Unix(1700000000, 0)
	dockerfile := "FROM " + s.Base + "\nCOPY data.txt /data.txt\n"
	var contents []string // every request's, in the order sent
	for round := range rounds {
		bodies := make([][]byte, n)
		for i := range n {
			contents = append(contents, testenv.RandomHex(t, 32)) // the same length for all
			df := testenv.File("context/Dockerfile", dockerfile)
			df.Header.ModTime = mtime
			data := testenv.File("context/data.txt", contents[len(contents)-1])
			data.Header.ModTime = mtime
			d := testenv.Dir("context/")
			d.Header.ModTime = mtime
			image := fmt.Sprintf("%s/shared:%d-%d", s.Reg.Addr, round, i)
			bodies[i] = testenv.BuildTar(t, d, df, data, testenv.ConfigEntry(t, map[string]any{"image": image}))
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = postNDJSON(b.url+"/build", bodies[i], testenv.SignedHeader(b.keys.payload, bodies[i], true))
			})
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	for k, want := range contents {
		tag := fmt.Sprintf("%d-%d", k/n, k%n)
		if got := string(testenv.ImageFile(t, s.Reg, "shared", tag, "data.txt")); got != want {
			t.Errorf("image %s holds %q, want its own %q (it is request %d's)", tag, got, want, slices.Index(contents, got))
		}
	}
}

// postNDJSON posts a build from a goroutine other than the test's and
// says what went wrong, if anything, with the build's log.
func postNDJSON(url string, body []byte, header http.Header) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = header.Clone()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(res.Body)
		return fmt.Errorf("status %d: %s", res.StatusCode, data)
	}
	var last progress.Result
	var log strings.Builder
	dec := json.NewDecoder(res.Body)
	for dec.More() {
		var r progress.Result
		if err := dec.Decode(&r); err != nil {
			return err
		}
		for _, l := range r.Log {
			log.WriteString(l + "\n")
		}
		last = r
	}
	if last.Status != progress.Success {
		return fmt.Errorf("%s: %s\n%s", last.Status, last.Error, log.String())
	}
	return nil
}
