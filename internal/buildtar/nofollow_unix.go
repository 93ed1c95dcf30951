//go:build unix

package buildtar

import "syscall"

// oNoFollow refuses a symlink as the final path component. os.Root already
// adds it on Unix; naming it here keeps the intent visible at the call site.
const oNoFollow = syscall.O_NOFOLLOW
