package buildtar

import (
	"archive/tar"
	"bytes"
	"io"
	"slices"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

func TestAppendSecrets(t *testing.T) {
	in := testenv.BuildTar(t, file("context/Dockerfile", "abc"), file("com.openfaas.docker.config", "abc"))
	out, err := AppendSecrets(in, []byte("sealed"))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the appended archive does not read back: %v", err)
		}
		names = append(names, h.Name)
		if h.Name == "com.openfaas.secrets" {
			b, _ := io.ReadAll(tr)
			if string(b) != "sealed" || h.Mode != 0o600 {
				t.Errorf("secrets entry = %q mode %o", b, h.Mode)
			}
		}
	}
	want := []string{"context/Dockerfile", "com.openfaas.docker.config", "com.openfaas.secrets"}
	if !slices.Equal(names, want) {
		t.Errorf("entries %v, want %v", names, want)
	}
}
