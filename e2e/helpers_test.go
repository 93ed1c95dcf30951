package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// payloadSecret is the HMAC key the builders in these tests are given.
func payloadSecret(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectors, "faas-cli-sealed-test/payload.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(data)
}
