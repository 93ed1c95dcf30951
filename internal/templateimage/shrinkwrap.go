package templateimage

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// templateDir is the template this package builds with, in the checkout.
const templateDir = "template/fnbuilder-go"

// stage makes work the folder faas-cli runs in: a view of the checkout,
// one symlink per top-level entry (faas-cli copies what a symlink points
// at), without build/ (faas-cli's output: work/build/ here) and without
// what the template's .dockerignore leaves out of function/ anyway (bin/,
// .git, e2e/, ...). faas-cli copies the whole handler (".") into each
// function's context before BuildKit applies .dockerignore; run in the
// checkout itself it copied the local binaries and .git too, for every
// function on every run. And each Builder lays its contexts out in its own
// Records, so that `make up` and `make cluster` from one checkout never
// write the same folder.
func (b Builder) stage(work string) error {
	ignored, err := dockerignore(filepath.Join(b.Repo, templateDir))
	if err != nil {
		return err
	}
	// An earlier run's links go: the checkout may have gained or lost entries.
	old, err := os.ReadDir(work)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range old {
		if e.Type()&fs.ModeSymlink != 0 {
			if err := os.Remove(filepath.Join(work, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(b.Repo)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if name == "build" {
			continue
		}
		if skip, err := ignored.MatchesOrParentMatches(filepath.Join("function", name)); err != nil {
			return err
		} else if skip {
			continue
		}
		if err := os.Symlink(filepath.Join(b.Repo, name), filepath.Join(work, name)); err != nil {
			return err
		}
	}
	return nil
}
