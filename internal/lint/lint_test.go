package lint

import (
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	dir, _ := filepath.Abs("../..")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("cannot find repository root from %s", dir)
	}
	return dir
}

func goFiles(t *testing.T) []string {
	var files []string
	root := repoRoot(t)
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && p != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			files = append(files, p)
		}
		return nil
	})
	return files
}

// TestGofmt fails on any file gofmt would change.
func TestGofmt(t *testing.T) {
	for _, f := range goFiles(t) {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out, err := format.Source(src)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if string(out) != string(src) {
			t.Errorf("%s is not gofmt'd", f)
		}
	}
}

// TestPackageComments fails on a package without a package comment.
func TestPackageComments(t *testing.T) {
	pkgs := map[string]bool{}
	for _, f := range goFiles(t) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		dir := filepath.Dir(f)
		if _, ok := pkgs[dir]; !ok {
			pkgs[dir] = false
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if af.Doc != nil && len(af.Doc.List) > 0 {
			pkgs[dir] = true
		}
	}
	for dir, ok := range pkgs {
		if !ok {
			t.Errorf("package in %s has no package comment (add a doc.go)", dir)
		}
	}
}
