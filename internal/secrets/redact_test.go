package secrets

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	t.Run("whole value", func(t *testing.T) {
		r := NewRedactor(map[string][]byte{"token": []byte("s3cr3t-v4lue")})
		got := r.String("echo s3cr3t-v4lue and again s3cr3t-v4lue")
		if strings.Contains(got, "s3cr3t") || strings.Count(got, Mask) != 2 {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("short whole value", func(t *testing.T) {
		r := NewRedactor(map[string][]byte{"pin": []byte("42x")})
		if got := r.String("pin=42x"); got != "pin="+Mask {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("multi-line value line by line", func(t *testing.T) {
		value := "-----BEGIN KEY-----\r\nAAAABBBBCCCC\nDDDD\r\nxyz\nEND-OF-KEY\n"
		r := NewRedactor(map[string][]byte{"key": []byte(value)})
		for _, line := range []string{"-----BEGIN KEY-----", "AAAABBBBCCCC", "DDDD", "END-OF-KEY"} {
			got := r.String("out: " + line + " :end")
			if got != "out: "+Mask+" :end" {
				t.Errorf("line %q: got %q", line, got)
			}
		}
		// A line shorter than four bytes is not hidden on its own: it
		// would mask ordinary words.
		if got := r.String("xyz"); got != "xyz" {
			t.Errorf("3-byte line was masked: %q", got)
		}
		// The whole value, with its CRLFs, is hidden in one piece.
		if got := r.String("[" + value + "]"); got != "["+Mask+"]" {
			t.Errorf("whole value: got %q", got)
		}
		// No carriage return is left behind by a CRLF line.
		if got := r.String("AAAABBBBCCCC\r"); got != Mask+"\r" {
			t.Errorf("CRLF line: got %q", got)
		}
	})
	t.Run("regex metacharacters", func(t *testing.T) {
		value := `a.b*c+(d)[e]{2}^$|\\?`
		r := NewRedactor(map[string][]byte{"re": []byte(value)})
		if got := r.String("x" + value + "y"); got != "x"+Mask+"y" {
			t.Errorf("got %q", got)
		}
		// Metacharacters are literal: no regex-style matching.
		if got := r.String("aXbbbbccd"); got != "aXbbbbccd" {
			t.Errorf("pattern matched as a regex: %q", got)
		}
	})
	t.Run("empty value ignored", func(t *testing.T) {
		r := NewRedactor(map[string][]byte{"empty": nil, "blank": {}, "real": []byte("hunter22")})
		in := "nothing secret here, hunter22"
		if got := r.String(in); got != "nothing secret here, "+Mask {
			t.Fatalf("got %q", got)
		}
		r = NewRedactor(map[string][]byte{"empty": {}})
		if got := r.String("abc"); got != "abc" {
			t.Fatalf("empty secret changed the text: %q", got)
		}
	})
	t.Run("overlapping secrets longest first", func(t *testing.T) {
		r := NewRedactor(map[string][]byte{
			"short": []byte("pass"),
			"long":  []byte("password-123"),
		})
		got := r.String("password-123 pass")
		if got != Mask+" "+Mask {
			t.Fatalf("got %q", got)
		}
		if strings.Contains(got, "-123") {
			t.Fatalf("tail of the longer secret leaked: %q", got)
		}
	})
	t.Run("nil redactor passes through", func(t *testing.T) {
		var r *Redactor
		if got := r.String("abc"); got != "abc" {
			t.Fatalf("got %q", got)
		}
		out := r.Clean([]string{"a", "b"})
		if out[0] != "a" || out[1] != "b" {
			t.Fatalf("nil Clean: %q", out)
		}
	})
	t.Run("a long line is redacted whole (the wire format truncates after)", func(t *testing.T) {
		r := NewRedactor(map[string][]byte{"k": []byte("topsecret")})
		line := strings.Repeat("w", 64<<10-4) + "topsecret"
		out := r.Clean([]string{line})
		if strings.Contains(out[0], "tops") {
			t.Fatalf("secret survived at the truncation boundary: %q", out[0][len(out[0])-40:])
		}
	})
}

// encodings are the forms a build step prints a value in: base64 CLI
// tools, Go and Python base64 modules, hex dumps.
var encodings = map[string]func([]byte) string{
	"base64 std":     base64.StdEncoding.EncodeToString,
	"base64 raw std": base64.RawStdEncoding.EncodeToString,
	"base64 url":     base64.URLEncoding.EncodeToString,
	"base64 raw url": base64.RawURLEncoding.EncodeToString,
	"hex lower":      hex.EncodeToString,
	"hex upper":      func(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) },
}

func TestRedactorEncodedForms(t *testing.T) {
	// "~~~" and "\xfb\xff" make the std and URL alphabets differ (+/ vs -_).
	values := map[string]string{
		"plain":        "~~~s3cr3t-v4lue",
		"binary":       "\xfb\xff\x00tok\xfe",
		"file newline": "npm-tok-9f8e7d6c\n",
	}
	for name, value := range values {
		r := NewRedactor(map[string][]byte{name: []byte(value)})
		trimmed := strings.TrimRight(value, "\n")
		for _, printed := range []string{trimmed, trimmed + "\n"} {
			for enc, encode := range encodings {
				form := encode([]byte(printed))
				got := r.String("out: " + form + " :end")
				if got != "out: "+Mask+" :end" {
					t.Errorf("%s, %s of %q: got %q", name, enc, printed, got)
				}
			}
		}
		if got := r.String("token=" + trimmed + ";"); got != "token="+Mask+";" {
			t.Errorf("%s without its newline: got %q", name, got)
		}
	}
	// The two alphabets really differ for the plain value, so both were tried.
	if p := []byte(values["plain"]); base64.StdEncoding.EncodeToString(p) == base64.URLEncoding.EncodeToString(p) {
		t.Fatal("test value encodes the same in both alphabets")
	}
}

func TestRedactorWrappedForms(t *testing.T) {
	secret := make([]byte, 120)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	r := NewRedactor(map[string][]byte{"blob": secret})
	std := base64.StdEncoding.EncodeToString(secret)
	lower := hex.EncodeToString(secret)
	for _, c := range []struct {
		tool  string
		text  string
		width int
	}{
		{"coreutils base64", std, 76},
		{"openssl base64", std, 64},
		{"xxd -p", lower, 60},
	} {
		lines := wrap(c.text, c.width)
		if len(lines) < 2 {
			t.Fatalf("%s: %d lines, want a wrapped text", c.tool, len(lines))
		}
		// Each line reaches the redactor on its own, as BuildKit hands
		// output over line by line.
		for i, line := range lines {
			got := r.String(line)
			if got != Mask && len(line) >= minEncoded {
				t.Errorf("%s line %d of %d: %q -> %q", c.tool, i+1, len(lines), line, got)
			}
		}
	}
}

func TestRedactorBase64InsideLongerText(t *testing.T) {
	secret := []byte("hunter2-registry-password")
	r := NewRedactor(map[string][]byte{"password": secret})
	// Registry auth and Basic auth encode "user:password"; any prefix
	// length puts the secret at one of three bit offsets.
	for _, prefix := range []string{"", "u:", "user:", "robot$ci:", "a"} {
		for _, suffix := range []string{"", "\n", ":x", "-tail-bytes"} {
			plain := prefix + string(secret) + suffix
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding} {
				encoded := enc.EncodeToString([]byte(plain))
				got := r.String(encoded)
				i := strings.Index(got, Mask)
				if i < 0 {
					t.Errorf("%q: %q not redacted", plain, encoded)
					continue
				}
				// What stays visible is at most the characters that
				// carry bits of the prefix and the suffix.
				firstSecretChar := (8*len(prefix) + 5) / 6
				pastSecretChars := 8 * (len(prefix) + len(secret)) / 6
				if i > firstSecretChar || len(got)-(i+len(Mask)) > len(encoded)-pastSecretChars {
					t.Errorf("%q: %q -> %q leaves secret characters visible", plain, encoded, got)
				}
			}
		}
	}
}

func TestRedactorOverlapsLeaveNothing(t *testing.T) {
	r := NewRedactor(map[string][]byte{"a": []byte("abcdef"), "b": []byte("defghi"), "c": []byte("xyz12")})
	for in, want := range map[string]string{
		"abcdefghi":         Mask, // two secrets sharing "def"
		"<abcdefghi>":       "<" + Mask + ">",
		"zabcdefxyz12q":     "z" + Mask + "q", // adjacent secrets are one span
		"abcdef defghi":     Mask + " " + Mask,
		"nothing to hide":   "nothing to hide",
		"abcde fghi xyz1 2": "abcde fghi xyz1 2",
	} {
		if got := r.String(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestRedactorManySecrets(t *testing.T) {
	values := map[string][]byte{}
	for i := range 300 {
		values[fmt.Sprint("s", i)] = []byte(fmt.Sprintf("value-%03d-%x", i, i*7919))
	}
	r := NewRedactor(values)
	var line strings.Builder
	for i := 0; i < 300; i += 7 {
		v := values[fmt.Sprint("s", i)]
		fmt.Fprintf(&line, "%s %s %s | ", v, base64.StdEncoding.EncodeToString(v), hex.EncodeToString(v))
	}
	got := r.String(line.String())
	if strings.Contains(got, "value-") || strings.Count(got, Mask) != 3*((300+6)/7) {
		t.Fatalf("got %q", got)
	}
}

// BenchmarkRedactor shows the cost per line does not grow with the number
// of secrets: compare -bench output for 1, 10 and 100 secrets.
func BenchmarkRedactor(b *testing.B) {
	line := "l: 2025-06-13T20:16:16Z #7 0.512 npm warn deprecated inflight@1.0.6: This module is not supported " +
		"and leaks memory. Do not use it. Check out lru-cache if you want a good and tested way to coalesce async requests"
	for _, n := range []int{1, 10, 100} {
		values := map[string][]byte{}
		for i := range n {
			values[fmt.Sprint("s", i)] = []byte(fmt.Sprintf("secret-value-number-%d-%x", i, i*104729))
		}
		r := NewRedactor(values)
		b.Run(fmt.Sprint(n, " secrets"), func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				_ = r.String(line)
			}
		})
	}
}
