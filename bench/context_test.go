package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// contextSpec is a deterministic build context: a Dockerfile, extra small
// files, and Files files of FileSize random (incompressible) bytes each,
// the same bytes every time it is written.
type contextSpec struct {
	Dockerfile string
	Small      map[string]string // name → content, next to the Dockerfile
	Files      int
	FileSize   int64
	Seed       uint64
}

// Size is the context's file bytes.
func (c contextSpec) Size() int64 {
	n := int64(len(c.Dockerfile)) + int64(c.Files)*c.FileSize
	for _, v := range c.Small {
		n += int64(len(v))
	}
	return n
}

func (c contextSpec) fileName(i int) string { return fmt.Sprintf("data/blob-%04d.bin", i) }

// random writes file i's bytes.
func (c contextSpec) random(w io.Writer, i int) error {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], c.Seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(i))
	src := rand.NewChaCha8(seed)
	buf := make([]byte, 256<<10)
	for left := c.FileSize; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		_, _ = src.Read(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	return nil
}

// WriteDir lays the context out on disk (for buildctl).
func (c contextSpec) WriteDir(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(c.Dockerfile), 0o644); err != nil {
		return err
	}
	for name, v := range c.Small {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			return err
		}
	}
	for i := range c.Files {
		f, err := os.Create(filepath.Join(dir, c.fileName(i)))
		if err != nil {
			return err
		}
		err = c.random(f, i)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// WriteTar streams a build request (wire protocol: context/ and the
// build config) holding the context, without holding it in memory.
func (c contextSpec) WriteTar(w io.Writer, image string, extraConfig map[string]any) error {
	tw := tar.NewWriter(w)
	reg := func(name string, size int64) error {
		return tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg})
	}
	for _, d := range []string{"context/", "context/data/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	if err := reg("context/Dockerfile", int64(len(c.Dockerfile))); err != nil {
		return err
	}
	if _, err := io.WriteString(tw, c.Dockerfile); err != nil {
		return err
	}
	for _, name := range sortedKeys(c.Small) {
		if err := reg("context/"+name, int64(len(c.Small[name]))); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, c.Small[name]); err != nil {
			return err
		}
	}
	for i := range c.Files {
		if err := reg("context/"+c.fileName(i), c.FileSize); err != nil {
			return err
		}
		if err := c.random(tw, i); err != nil {
			return err
		}
	}
	cfg := map[string]any{"image": image}
	for k, v := range extraConfig {
		cfg[k] = v
	}
	data, _ := json.Marshal(cfg)
	if err := reg("com.openfaas.docker.config", int64(len(data))); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	return tw.Close()
}

// Tar is WriteTar into memory, for small contexts.
func (c contextSpec) Tar(image string) []byte {
	var buf bytes.Buffer
	if err := c.WriteTar(&buf, image, nil); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// signStream computes the signature of what gen writes, in a first pass
// that keeps nothing: the least a client can do before it sends, since the
// signature travels as a header. postSigned then sends a second pass of
// gen as it is made, so that no client holds the whole tar.
func signStream(key []byte, gen func(io.Writer) error) (string, int64, error) {
	signer := testenv.NewSigner(key)
	if err := gen(signer); err != nil {
		return "", 0, err
	}
	return signer.Signature(), signer.N, nil
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// postSigned signs what gen writes and posts it as a build request, gen's
// second pass streamed as the body; signed is how long the signing took.
func postSigned(url string, key []byte, gen func(io.Writer) error) (signed time.Duration, _ buildResult, _ error) {
	start := time.Now()
	sig, n, err := signStream(key, gen)
	if err != nil {
		return 0, buildResult{}, err
	}
	signed = time.Since(start)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(gen(pw)) }()
	res, err := postBuild(context.Background(), http.DefaultClient, url, pr, n, sig)
	pr.Close()
	return signed, res, err
}
