package daemon

import (
	"errors"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// MountsUnder lists, deepest first, the mount points at or below dir and
// the mounts whose source or options name a path in it (overlay layers of
// a snapshotter, bind mounts of its files).
func MountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") || strings.Contains(unescapeMount(line), dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out
}

// Unmount lazily unmounts MountsUnder(dir) and returns what it unmounted.
func Unmount(dir string) []string {
	var done []string
	for _, m := range MountsUnder(dir) {
		if syscall.Unmount(m, syscall.MNT_DETACH) == nil {
			done = append(done, m)
		}
	}
	return done
}

// RemoveAll removes dir; mounts that a daemon killed hard left in it are
// unmounted first.
func RemoveAll(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil {
		return nil
	}
	Unmount(dir)
	if err2 := os.RemoveAll(dir); err2 != nil {
		return errors.Join(err, err2)
	}
	return nil
}

// unescapeMount undoes the octal escapes (\040 etc.) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
