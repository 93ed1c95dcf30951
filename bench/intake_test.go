package bench

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/buildtar"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// intakeSpec is the 256 MiB context of the intake benchmark: 64 files of
// 4 MiB random bytes.
var intakeSpec = contextSpec{Dockerfile: "FROM scratch\nCOPY . /\n", Files: 64, FileSize: 4 << 20, Seed: 256}

var intakeKey = []byte("bench-payload-secret")

// fixtures holds files shared by the benchmarks of one process; TestMain
// removes it.
var fixtures = struct {
	once sync.Once
	dir  string
	err  error
}{}

func fixtureDir(tb testing.TB) string {
	fixtures.once.Do(func() { fixtures.dir, fixtures.err = os.MkdirTemp("", "fnb-bench-") })
	if fixtures.err != nil {
		tb.Fatal(fixtures.err)
	}
	return fixtures.dir
}

var intake = struct {
	once      sync.Once
	path, sig string
	size      int64
	err       error
}{}

// intakeFixture writes the 256 MiB request tar once and signs it.
func intakeFixture(tb testing.TB) (path, sig string, size int64) {
	dir := fixtureDir(tb)
	intake.once.Do(func() {
		intake.path = filepath.Join(dir, "intake.tar")
		f, err := os.Create(intake.path)
		if err != nil {
			intake.err = err
			return
		}
		signer := testenv.NewSigner(intakeKey)
		if err := intakeSpec.WriteTar(io.MultiWriter(f, signer), "127.0.0.1:1/intake:1", nil); err != nil {
			intake.err = err
		}
		if err := f.Close(); err != nil && intake.err == nil {
			intake.err = err
		}
		intake.size, intake.sig = signer.N, signer.Signature()
	})
	if intake.err != nil {
		tb.Fatal(intake.err)
	}
	return intake.path, intake.sig, intake.size
}

func intakeLimits() buildtar.Limits {
	lim := buildtar.DefaultLimits()
	lim.MaxBytes = 1 << 30
	return lim
}

// timeIntake runs step on the intake fixture b.N times; done (the
// clean-up) is not timed.
func timeIntake(b *testing.B, step func(f *os.File, sig string, size int64) (done func(), err error)) {
	path, sig, size := intakeFixture(b)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		done, err := step(f, sig, size)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		done()
		b.StartTimer()
	}
}

// BenchmarkIntake is what build-fn does with a request body before any
// build: receive it into a file in the work directory while verifying its
// HMAC-SHA256 and indexing its tar from the same bytes (signature.Spool
// with a buildtar.Indexer as its tee), for a 256 MiB context read from the
// page cache. The clean-up of each iteration is not timed.
func BenchmarkIntake(b *testing.B) {
	work, lim := b.TempDir(), intakeLimits()
	timeIntake(b, func(f *os.File, sig string, size int64) (func(), error) {
		ix := buildtar.NewIndexer(context.Background(), lim)
		sp, _, err := signature.Spool(f, sig, [][]byte{intakeKey}, signature.Options{Dir: work, Limit: 2 << 30, Size: size, Tee: ix})
		if err != nil {
			return nil, err
		}
		_, err = ix.Finish()
		return func() { sp.Close() }, err
	})
}

// BenchmarkSpool is the intake without the index: HMAC verify while
// receiving into a file.
func BenchmarkSpool(b *testing.B) {
	work := b.TempDir()
	timeIntake(b, func(f *os.File, sig string, size int64) (func(), error) {
		sp, _, err := signature.Spool(f, sig, [][]byte{intakeKey}, signature.Options{Dir: work, Limit: 2 << 30, Size: size})
		if err != nil {
			return nil, err
		}
		return func() { sp.Close() }, nil
	})
}

// BenchmarkIndex is the index alone, of a verified tar in the page cache:
// what a context fetched by reference costs on top of its download.
func BenchmarkIndex(b *testing.B) {
	lim := intakeLimits()
	timeIntake(b, func(f *os.File, _ string, _ int64) (func(), error) {
		_, err := buildtar.Index(context.Background(), f, lim)
		return func() {}, err
	})
}

// BenchmarkHMAC is Go's HMAC-SHA256 over 16 KiB blocks in memory, the
// figure to set beside `openssl speed -bytes 16384 sha256`.
func BenchmarkHMAC(b *testing.B) {
	block := make([]byte, 16<<10)
	mac := hmac.New(sha256.New, intakeKey)
	b.SetBytes(int64(len(block)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mac.Write(block)
	}
	_ = mac.Sum(nil)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtures.dir != "" {
		os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}
