package buildtar

import (
	"archive/tar"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Names are checked as the kernel would check them on unpacking, and kept
// far above what real contexts use.
const (
	maxNameLen      = 4096 // a whole path, as PATH_MAX
	maxComponentLen = 255  // one name, as NAME_MAX
	maxDepth        = 256
)

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
	kindHardlink // a second name for a kindFile node
)

// Tree is the index of a build context: every directory, file and link,
// and for each file where its bytes lie in the tar.
type Tree struct {
	lim     Limits
	nodes   []node // nodes[0] is the context directory itself
	byName  map[childKey]int32
	entries int   // tar entries and implied directories, against lim.MaxEntries
	bytes   int64 // file bytes, against lim.MaxBytes
}

type childKey struct {
	parent int32
	name   string
}

type node struct {
	name   string // the last path component
	parent int32
	kind   kind
	perm   uint32 // permission bits of a file
	size   int64  // a file's full size, holes included
	mtime  int64  // derived from the content: see contentTime
	// dataAt is where a file's bytes start in the tar, or -1 when the tar
	// stores it sparse and headerAt is where its header starts instead.
	dataAt   int64
	headerAt int64
	link     string  // a symlink's target
	target   int32   // a hard link's file
	kids     []int32 // a directory's entries, sorted by name once indexed
}

const noNode int32 = -1

func newTree(lim Limits) *Tree {
	return &Tree{lim: lim, nodes: []node{{kind: kindDir, parent: noNode}}, byName: map[childKey]int32{}}
}

// count charges one tar entry or implied directory.
func (t *Tree) count(entry string) error {
	if t.entries++; t.entries > t.lim.MaxEntries {
		return &Error{Entry: entry, Reason: fmt.Sprintf("more than %d tar entries and directories their paths imply", t.lim.MaxEntries), TooLarge: true}
	}
	return nil
}

// lookup finds rel (clean, relative to the context) without following
// symlinks; noNode when it does not exist.
func (t *Tree) lookup(rel string) int32 {
	return t.lookupFrom(0, rel)
}

func (t *Tree) lookupFrom(dir int32, rel string) int32 {
	if rel == "" {
		return dir
	}
	for name := range strings.SplitSeq(rel, "/") {
		if t.nodes[dir].kind != kindDir {
			return noNode
		}
		next, ok := t.byName[childKey{dir, name}]
		if !ok {
			return noNode
		}
		dir = next
	}
	return dir
}

// isFile says whether rel is a regular file (or a hard link to one).
func (t *Tree) isFile(rel string) bool {
	i := t.lookup(rel)
	return i != noNode && (t.nodes[i].kind == kindFile || t.nodes[i].kind == kindHardlink)
}

// add checks one context entry at rel (relative to the context) and
// records it. For a regular file it returns the node whose data the
// caller reads next; noNode otherwise.
func (t *Tree) add(hdr *tar.Header, rel string) (int32, error) {
	fail := func(reason string) (int32, error) { return noNode, &Error{Entry: hdr.Name, Reason: reason} }
	if len(rel) > maxNameLen || len(hdr.Linkname) > maxNameLen || strings.Count(rel, "/") >= maxDepth {
		return fail("path is too long or too deep")
	}
	for name := range strings.SplitSeq(rel, "/") {
		if len(name) > maxComponentLen {
			return fail("name too long")
		}
	}

	existing := t.lookup(rel)
	if hdr.Typeflag == tar.TypeDir && existing != noNode && t.nodes[existing].kind == kindDir {
		return noNode, nil // already implied by an earlier entry's path
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		return fail("device files are not allowed")
	case tar.TypeFifo:
		return fail("fifos are not allowed")
	default:
		return fail(fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
	}
	if existing != noNode {
		return fail("duplicate entry")
	}
	parent, err := t.makeParents(hdr.Name, rel)
	if err != nil {
		return noNode, err
	}
	n := node{name: rel[strings.LastIndexByte(rel, '/')+1:], parent: parent, target: noNode, dataAt: -1}

	switch hdr.Typeflag {
	case tar.TypeDir:
		n.kind = kindDir
	case tar.TypeSymlink:
		if !symlinkInside(rel, hdr.Linkname) {
			return fail("symlink target " + hdr.Linkname + " escapes the build context")
		}
		n.kind, n.link, n.mtime = kindSymlink, hdr.Linkname, contentTime(xxhash.Sum64String(hdr.Linkname))
	case tar.TypeLink:
		target, ok := cleanName(hdr.Linkname)
		rest, inContext := strings.CutPrefix(target, ContextName+"/")
		if !ok || !inContext {
			return fail("hard link target " + hdr.Linkname + " escapes the build context")
		}
		if !t.isFile(rest) {
			return fail("hard link target " + hdr.Linkname + " is not a regular file earlier in the archive")
		}
		n.kind, n.target = kindHardlink, t.fileOf(t.lookup(rest))
	default: // regular file, possibly sparse
		if hdr.Size > t.lim.MaxBytes-t.bytes {
			return noNode, &Error{Entry: hdr.Name, Reason: fmt.Sprintf("build context larger than %d bytes", t.lim.MaxBytes), TooLarge: true}
		}
		t.bytes += hdr.Size
		// setuid, setgid and sticky are dropped; the executable bit
		// matters to COPY.
		n.kind, n.size, n.perm = kindFile, hdr.Size, uint32(hdr.Mode&0o777)
	}
	i := t.insert(n)
	if n.kind != kindFile {
		return noNode, nil
	}
	return i, nil
}

// fileOf is the file a node names: itself, or a hard link's target.
func (t *Tree) fileOf(i int32) int32 {
	if t.nodes[i].kind == kindHardlink {
		return t.nodes[i].target
	}
	return i
}

func (t *Tree) insert(n node) int32 {
	i := int32(len(t.nodes))
	t.nodes = append(t.nodes, n)
	t.byName[childKey{n.parent, n.name}] = i
	t.nodes[n.parent].kids = append(t.nodes[n.parent].kids, i)
	return i
}

// makeParents creates the missing parent directories of rel, each charged
// as an entry, and returns rel's parent. A parent that is a file or a
// symlink is refused: going through a symlink is how archives escape their
// destination.
func (t *Tree) makeParents(entry, rel string) (int32, error) {
	dir := int32(0)
	for {
		slash := strings.IndexByte(rel, '/')
		if slash < 0 {
			return dir, nil
		}
		name := rel[:slash]
		rel = rel[slash+1:]
		next, ok := t.byName[childKey{dir, name}]
		if !ok {
			if err := t.count(entry); err != nil {
				return noNode, err
			}
			next = t.insert(node{name: name, parent: dir, kind: kindDir, target: noNode, dataAt: -1})
		}
		switch t.nodes[next].kind {
		case kindDir:
		case kindSymlink:
			return noNode, &Error{Entry: entry, Reason: "path goes through symlink " + t.path(next)}
		default:
			return noNode, &Error{Entry: entry, Reason: "parent " + t.path(next) + " is not a directory"}
		}
		dir = next
	}
}

// path is a node's path relative to the context.
func (t *Tree) path(i int32) string {
	var parts []string
	for ; i > 0; i = t.nodes[i].parent {
		parts = append(parts, t.nodes[i].name)
	}
	slices.Reverse(parts)
	return strings.Join(parts, "/")
}

// finish sorts each directory as a directory walk lists it.
func (t *Tree) finish() {
	for i := range t.nodes {
		slices.SortFunc(t.nodes[i].kids, func(a, b int32) int { return strings.Compare(t.nodes[a].name, t.nodes[b].name) })
	}
}

// symlinkInside reports whether a symlink at rel with this target resolves
// inside the context whatever other links the archive adds, before or after.
// Leading ".." steps climb out of rel's directory, whose components are real
// directories (makeParents guarantees it), so they are counted exactly. A
// ".." after a name is refused: that name may be, or later become, a symlink,
// and then ".." would climb from wherever the link points.
func symlinkInside(rel, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
		return false
	}
	depth := strings.Count(rel, "/")
	named := false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if named || depth == 0 {
				return false
			}
			depth--
		default:
			named = true
		}
	}
	return true
}

// timeBase is the earliest mtime a context file is given.
var timeBase = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// contentTime is the mtime BuildKit is told a file has: a function of its
// bytes alone (a symlink's: of its target). BuildKit keeps an incremental
// copy of each local context and re-sends only the files whose path,
// size, mode, owner, link target or mtime differ from that copy, so with
// this mtime it re-sends exactly the files whose bytes changed, whatever
// mtimes the client's tar carries (faas-cli copies every file afresh
// before each build).
//
// The 59 bits of a 64-bit xxHash put it between 2000 and 2018. xxHash is
// not collision-resistant against someone who wants a collision, and that
// is safe here: the copy BuildKit compares against is chosen by the
// session's SharedKey, which build-fn sets per tenant and image repository
// (sharedKey in internal/buildkit), so only requests for the same
// repository of the same tenant are ever compared, and a collision between
// two of them can only give a build that repository's own earlier bytes.
// Two honest versions of one file, with the same path, size and mode,
// collide with probability 2^-59.
func contentTime(sum uint64) int64 {
	return timeBase + int64(sum>>5)
}
