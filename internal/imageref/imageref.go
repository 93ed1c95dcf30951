// Package imageref names the parts of an image reference the builder
// decides by: its full name (what tenant prefixes and BuildKit's source
// policy match), its repository (the unit of cache locality) and its
// registry host.
package imageref

import (
	"strings"

	"github.com/distribution/reference"
)

// Normalize is the full name BuildKit gives an image ("alpine" is
// "docker.io/library/alpine:latest"); "" for an invalid reference, which
// then matches no prefix.
func Normalize(image string) string {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return ""
	}
	return reference.TagNameOnly(named).String()
}

// Repository is an image reference without its tag or digest.
func Repository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// Host is the registry part of an image reference, with Docker Hub's
// default when the first path element is not a host.
func Host(image string) string {
	first, _, found := strings.Cut(image, "/")
	if !found || !strings.ContainsAny(first, ".:") && first != "localhost" {
		return "docker.io"
	}
	return first
}
