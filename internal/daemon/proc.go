package daemon

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ProcStat is what /proc/PID/stat says about a process.
type ProcStat struct {
	State string
	Pgrp  int
	Start uint64 // clock ticks after boot: with the PID, it names one process
}

func (s ProcStat) live() bool { return s.State != "Z" && s.State != "X" }

// Stat reads /proc/PID/stat.
func Stat(pid int) (ProcStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcStat{}, err
	}
	// pid (comm) state ppid pgrp session ...; comm may hold anything.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 20 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	pgrp, _ := strconv.Atoi(f[2])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return ProcStat{State: f[0], Pgrp: pgrp, Start: start}, nil
}

// PIDs lists every process.
func PIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// GroupMembers lists the live (not zombie) processes of process group pgid.
func GroupMembers(pgid int) []int {
	var out []int
	for _, pid := range PIDs() {
		if st, err := Stat(pid); err == nil && st.Pgrp == pgid && st.live() {
			out = append(out, pid)
		}
	}
	return out
}

// Tail returns the last n bytes of a log file, from a line start.
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := max(fi.Size()-n, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	s := string(b)
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		s = "...\n" + s
	}
	return s
}

// Since returns what a log gained after offset from (at most 16 MiB).
func Since(path string, from int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, from, 16<<20))
	return string(b)
}

// Size is a file's size, 0 when it does not exist.
func Size(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
