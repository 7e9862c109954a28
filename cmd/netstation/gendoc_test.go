package main

import (
	"bytes"
	"os"
	"testing"
)

// TestCLIReferenceCurrent fails when docs/CLI.md differs from what the
// commands say of themselves; regenerate with
// `go run ./cmd/netstation gendoc > docs/CLI.md`.
func TestCLIReferenceCurrent(t *testing.T) {
	root := newRoot()
	var b bytes.Buffer
	writeReference(&b, root)
	have, err := os.ReadFile("../../docs/CLI.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, b.Bytes()) {
		t.Error("docs/CLI.md is stale: go run ./cmd/netstation gendoc > docs/CLI.md")
	}
}
