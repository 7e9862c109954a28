// Package lint holds repository-wide checks that run with go test: gofmt
// and a package comment on every package.
package lint
