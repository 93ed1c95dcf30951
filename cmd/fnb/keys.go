package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/cli"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
)

func keygen(args []string, stdout, stderr io.Writer) error {
	fs := cli.Flags("keygen", stderr)
	out := fs.String("o", "key", "private key file; the public key goes to FILE.pub")
	fs.StringVar(out, "output", "key", "same as -o")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	kp, err := secrets.GenerateKeyPair()
	if err != nil {
		return err
	}
	if err := secrets.WriteKeyFiles(*out, kp); err != nil {
		return err
	}
	id, _ := secrets.KeyID(kp.Public)
	fmt.Fprintf(stdout, "Wrote private key: %s\nWrote public key:  %s.pub\nKey ID:            %s\n", *out, *out, id)
	return nil
}

func sealCmd(args []string, stdout, stderr io.Writer) error {
	fs := cli.Flags("seal", stderr)
	publicKey := fs.String("public-key", "", "recipient public key: a file (base64 or /publickey JSON) or the base64 value")
	out := fs.String("o", secrets.FileName, "output file")
	fs.StringVar(out, "output", secrets.FileName, "same as -o")
	var literals, files repeated
	fs.Var(&literals, "from-literal", "secret as NAME=VALUE (repeatable)")
	fs.Var(&files, "from-file", "secret as NAME=PATH, binary-safe (repeatable)")
	positional, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *publicKey == "" && len(positional) == 1 {
		*publicKey = positional[0]
	} else if len(positional) > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(positional, " "))
	}
	if *publicKey == "" {
		return fmt.Errorf("a public key is required: fnb seal KEY.pub or --public-key KEY.pub")
	}
	pub, err := readPublicKey(*publicKey)
	if err != nil {
		return err
	}

	values := map[string][]byte{}
	for _, kv := range literals {
		name, value, _ := strings.Cut(kv, "=")
		values[name] = []byte(value)
	}
	// As in faas-cli, a later --from-file replaces a literal of the same name.
	for _, kv := range files {
		name, path, _ := strings.Cut(kv, "=")
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--from-file %s: %w", name, err)
		}
		values[name] = data
	}
	if len(values) == 0 {
		return fmt.Errorf("at least one --from-literal or --from-file is required")
	}
	envelope, err := secrets.Seal(pub, values)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, envelope, 0o600); err != nil {
		return err
	}
	id, _ := secrets.KeyID(pub)
	fmt.Fprintf(stdout, "Sealed %d secret(s) to %s (key ID: %s)\n", len(values), *out, id)
	return nil
}

// readPublicKey takes a file path, or the base64 key itself when no such
// file exists, like faas-cli's --builder-public-key.
func readPublicKey(arg string) ([]byte, error) {
	data, err := os.ReadFile(arg)
	if os.IsNotExist(err) {
		data, err = []byte(arg), nil
	}
	if err != nil {
		return nil, err
	}
	return secrets.DecodePublicKey(data)
}

func unsealCmd(args []string, stdout, stderr io.Writer) error {
	fs := cli.Flags("unseal", stderr)
	var keyFiles repeated
	fs.Var(&keyFiles, "private-key", "private key file (repeat for rotated keys; current first)")
	in := fs.String("in", secrets.FileName, "sealed file")
	only := fs.String("key", "", "print only this secret's raw value")
	asJSON := fs.Bool("json", false, "print a JSON object (lossy for non-UTF-8 values)")
	positional, err := parse(fs, args)
	if err != nil {
		return err
	}
	// faas-cli's form is `unseal KEY_FILE`; ours is `unseal --private-key F FILE`.
	switch {
	case len(keyFiles) == 0 && len(positional) >= 1:
		keyFiles = append(keyFiles, positional[0])
		positional = positional[1:]
	}
	if len(positional) == 1 {
		*in = positional[0]
	} else if len(positional) > 1 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(positional[1:], " "))
	}
	if len(keyFiles) == 0 {
		return fmt.Errorf("a private key is required: --private-key FILE")
	}
	ring, err := secrets.LoadKeyRing(keyFiles...)
	if err != nil {
		return err
	}
	envelope, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	values, err := ring.Unseal(envelope)
	if err != nil {
		return err
	}
	switch {
	case *only != "":
		v, ok := values[*only]
		if !ok {
			return fmt.Errorf("key %q not found in sealed envelope", *only)
		}
		_, err = stdout.Write(v)
		return err
	case *asJSON:
		text := make(map[string]string, len(values))
		for k, v := range values {
			text[k] = string(v)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(text)
	}
	for _, name := range slices.Sorted(maps.Keys(values)) {
		fmt.Fprintf(stdout, "%s=%s\n", name, values[name])
	}
	return nil
}
