package buildtar

import (
	"archive/tar"
	"bytes"
)

// AppendSecrets adds the sealed secrets entry to a request tar, before its
// end-of-archive blocks, as go-sdk's BuildWithSecrets does.
func AppendSecrets(tarBytes, sealed []byte) ([]byte, error) {
	trimmed := tarBytes
	for len(trimmed) >= 512 && bytes.Equal(trimmed[len(trimmed)-512:], make([]byte, 512)) {
		trimmed = trimmed[:len(trimmed)-512]
	}
	buf := bytes.NewBuffer(trimmed[:len(trimmed):len(trimmed)])
	tw := tar.NewWriter(buf)
	if err := tw.WriteHeader(&tar.Header{Name: SecretsName, Mode: 0o600, Size: int64(len(sealed))}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(sealed); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
