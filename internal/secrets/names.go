package secrets

import "fmt"

// maxNameLen keeps ids readable in logs and well inside path limits.
const maxNameLen = 128

// ValidateName reports whether name can be a BuildKit secret id. The id is
// used as `RUN --mount=type=secret,id=NAME` and as the default file name
// under /run/secrets, so it must be a single, plain path element.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("secret name is empty")
	case len(name) > maxNameLen:
		return fmt.Errorf("secret name %.20q... is longer than %d characters", name, maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("secret name %q is not allowed", name)
	}
	for _, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.'
		if !ok {
			return fmt.Errorf("secret name %q: character %q is not allowed (use letters, digits, '.', '_' and '-')", name, c)
		}
	}
	return nil
}
