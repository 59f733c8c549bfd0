// Package layering holds only a test: it reads the import graph of the
// module (go list) and checks it against the layering rules stated in
// docs/ARCHITECTURE.md, so the shape of the packages cannot rot silently.
// `make lint` runs it; so does `go test ./...`.
package layering
