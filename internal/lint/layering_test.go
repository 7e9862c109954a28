package lint

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/netstation/netstation"

// under reports whether package p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// testHelpers are the internal packages that exist for tests; test files
// anywhere may import them.
var testHelpers = []string{"internal/nstest", "internal/privtest", "internal/linktest", "internal/cpupin", "internal/ethtool"}

// leafLibraries are stack packages with no state of a stack (pure
// functions over bytes) that code outside the stack's users may share.
var leafLibraries = []string{"stack/checksum", "stack/header"}

func anyUnder(p string, dirs []string) bool {
	for _, d := range dirs {
		if under(p, d) {
			return true
		}
	}
	return false
}

// kindOf is the peripheral kind package p belongs to (peripherals/disk
// for peripherals/disk/nbd), or "" for the runtime and its shared
// engines (peripherals, peripherals/bench, peripherals/gossip).
func kindOf(p string) string {
	if !strings.HasPrefix(p, "peripherals/") {
		return ""
	}
	k := strings.SplitN(p, "/", 3)[:2]
	switch k[1] {
	case "bench", "gossip", "node", "peripheraltest":
		return ""
	}
	return strings.Join(k, "/")
}

// layeringRule returns the rule (as docs/ARCHITECTURE.md states it) that an
// import of package to by a file of package from breaks, or "" when the
// import is allowed. Both are module-relative paths. Test files may
// also import the test helpers and the other end of the protocol they test
// (a cpu client's test runs the disk server), but never climb to testbed
// or cmd.
func layeringRule(from, to string, test bool) string {
	if test && anyUnder(to, testHelpers) {
		return ""
	}
	switch {
	case under(to, "cmd"):
		return "nothing imports cmd"
	case under(to, "testbed") && !under(from, "cmd") && !under(from, "testbed"):
		return "only cmd imports testbed"
	}
	switch {
	case under(from, "stack"):
		if !under(to, "stack") {
			return "stack imports nothing of ours outside stack (test files: and the internal test helpers)"
		}
	case under(from, "internal/wire"):
		if !under(to, "internal/wire") && !under(to, "stack") {
			return "internal/wire imports nothing of ours but other wire formats and stack"
		}
	case under(from, "internal"):
		if !under(to, "internal") && !under(to, "stack") {
			return "internal imports nothing of ours but internal and stack"
		}
	case under(from, "fabric"):
		if !under(to, "fabric") && !under(to, "internal") && !anyUnder(to, leafLibraries) {
			return "fabric imports nothing of ours but internal (and the leaf libraries stack/checksum, stack/header)"
		}
	case under(from, "peripherals"):
		if under(to, "fabric") {
			return "peripherals never import fabric"
		}
		if under(to, "cpu") && !test {
			return "peripherals never import cpu (a kind's client code talks to it over the wire: internal/wire)"
		}
		fk, tk := kindOf(from), kindOf(to)
		if from == "peripherals" && tk != "" {
			return "the runtime (package peripherals) imports no kind: kinds plug into it"
		}
		if fk != "" && tk != "" && fk != tk && !test {
			return "a peripheral kind never imports another kind (" + fk + " imports " + tk + ")"
		}
	case under(from, "cpu"):
		if under(to, "fabric") {
			return "cpu never imports fabric"
		}
		if kindOf(to) != "" && !test {
			return "cpu imports the runtime (peripherals, peripherals/bench, peripherals/gossip) but never another kind: it talks to disks and displays over the wire (internal/wire)"
		}
	case under(from, "testbed"):
		// testbed imports fabric, peripherals, cpu, stack, internal.
	}
	return ""
}

// TestImportLayering fails on an import that breaks the layering of
// docs/ARCHITECTURE.md ("Layering"), naming the file, the import and the
// rule.
func TestImportLayering(t *testing.T) {
	root := repoRoot(t)
	n := 0
	for _, f := range goFiles(t) {
		rel, _ := filepath.Rel(root, f)
		from := filepath.ToSlash(filepath.Dir(rel))
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range af.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if !under(p, module) {
				continue
			}
			to := strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
			n++
			if rule := layeringRule(from, to, strings.HasSuffix(f, "_test.go")); rule != "" {
				t.Errorf("%s imports %s: %s", rel, p, rule)
			}
		}
	}
	if n < 100 {
		t.Fatalf("only %d imports of ours seen: the walk is broken", n)
	}
}

// TestLayeringRules checks the rule table itself on imports that must pass
// and imports that must fail, so a rule cannot silently stop applying.
func TestLayeringRules(t *testing.T) {
	for _, c := range []struct {
		from, to string
		test     bool
		ok       bool
	}{
		{"stack/tcp", "stack/link", false, true},
		{"stack/tcp", "internal/dgram", false, false},
		{"stack/tcp", "internal/nstest", true, true},
		{"stack/tcp", "internal/nstest", false, false},
		{"internal/wire/capability", "internal/wire/diskproto", false, true},
		{"internal/wire/diskproto", "peripherals", false, false},
		{"internal/dgram", "stack", false, true},
		{"internal/dgram", "cpu", false, false},
		{"peripherals", "cpu/iperf3", false, false},
		{"peripherals", "peripherals/disk", false, false},
		{"peripherals", "peripherals/bench", false, true},
		{"peripherals/disk", "peripherals", false, true},
		{"peripherals/disk", "peripherals/display", false, false},
		{"peripherals/disk", "peripherals/display", true, true},
		{"peripherals/disk/nbd", "peripherals/disk", false, true},
		{"peripherals/display", "cpu/render", false, false},
		{"peripherals/display", "cpu/render", true, true},
		{"cpu", "peripherals", false, true},
		{"cpu/render", "peripherals/bench", false, true},
		{"cpu/storage", "peripherals/disk", false, false},
		{"cpu/storage", "peripherals/disk", true, true},
		{"cpu", "testbed", false, false},
		{"cpu", "testbed", true, false},
		{"fabric/capture", "stack/checksum", false, true},
		{"fabric", "stack", false, false},
		{"fabric", "peripherals", false, false},
		{"testbed", "fabric", false, true},
		{"testbed", "cmd/netstation", false, false},
		{"cmd/netstation", "testbed", false, true},
		{"peripherals/node", "testbed/spec", false, false},
	} {
		rule := layeringRule(c.from, c.to, c.test)
		if (rule == "") != c.ok {
			t.Errorf("%s -> %s (test file %v): rule %q, want allowed=%v", c.from, c.to, c.test, rule, c.ok)
		}
	}
}
