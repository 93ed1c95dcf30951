package buildkit

import "testing"

func TestSharedKey(t *testing.T) {
	key := SharedKey("tenant-a", "registry.example:5000/team/fn:1.0")
	for _, same := range []string{"registry.example:5000/team/fn:2.0", "registry.example:5000/team/fn@sha256:" + "ab"} {
		if got := SharedKey("tenant-a", same); got != key {
			t.Errorf("%s: key %s, want the repository's %s", same, got, key)
		}
	}
	for name, other := range map[string]string{
		"other tenant":     SharedKey("tenant-b", "registry.example:5000/team/fn:1.0"),
		"no tenant":        SharedKey("", "registry.example:5000/team/fn:1.0"),
		"other repository": SharedKey("tenant-a", "registry.example:5000/team/fn2:1.0"),
		"other registry":   SharedKey("tenant-a", "registry.example:5001/team/fn:1.0"),
		// The same characters split another way between tenant and image.
		"shifted": SharedKey("tenant-a\" \"registry.example:5000/team", "fn:1.0"),
	} {
		if other == key {
			t.Errorf("%s: same key %s", name, key)
		}
	}
	if SharedKey("", "") == "" {
		t.Error("an empty key would share the daemon's one copy with every client")
	}
}
