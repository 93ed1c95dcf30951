//go:build !unix

package buildtar

// oNoFollow is zero where the flag does not exist; os.Root still refuses
// to follow links out of the context there.
const oNoFollow = 0
