package hardening

import (
	"strings"
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
	first := "tenant-a-private-" + randHex(t, 16)
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
