// Package lint holds repository-wide checks that run with go test: gofmt,
// a package comment on every package, and the import layering of
// docs/ARCHITECTURE.md ("Layering"), read with go/parser from every file.
package lint
