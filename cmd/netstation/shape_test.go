package main

import (
	"encoding"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/testbed"
)

// jsonShape lists the JSON paths a value of type t encodes to, one per
// line: "path type". Lists add "[]", maps "{}"; optional (omitempty)
// fields are marked "?". It follows encoding/json's rules for tags,
// embedded structs, pointers and text/JSON marshalers.
func jsonShape(t reflect.Type) []string {
	var out []string
	var walk func(path string, t reflect.Type, opt string, seen map[reflect.Type]bool)
	walk = func(path string, t reflect.Type, opt string, seen map[reflect.Type]bool) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		add := func(kind string) { out = append(out, path+opt+" "+kind) }
		switch {
		case t == reflect.TypeOf(time.Time{}):
			add("string(time)")
			return
		case t.Implements(reflect.TypeOf((*json.Marshaler)(nil)).Elem()), reflect.PointerTo(t).Implements(reflect.TypeOf((*json.Marshaler)(nil)).Elem()):
			add("json(" + t.String() + ")")
			return
		case t.Implements(reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()), reflect.PointerTo(t).Implements(reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()):
			add("string")
			return
		}
		switch t.Kind() {
		case reflect.Struct:
			if seen[t] {
				add("recursive(" + t.String() + ")")
				return
			}
			seen = maps(seen, t)
			add("object")
			for i := range t.NumField() {
				f := t.Field(i)
				if !f.IsExported() && !f.Anonymous {
					continue
				}
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, opts, _ := strings.Cut(tag, ",")
				if f.Anonymous && name == "" {
					ft := f.Type
					for ft.Kind() == reflect.Pointer {
						ft = ft.Elem()
					}
					if ft.Kind() == reflect.Struct {
						before := len(out)
						walk(path, ft, "", seen)
						out = append(out[:before], out[before+1:]...) // the embedded struct's own "object" line
						continue
					}
				}
				if name == "" {
					name = f.Name
				}
				o := ""
				if strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero") {
					o = "?"
				}
				walk(path+"."+name, f.Type, o, seen)
			}
		case reflect.Slice, reflect.Array:
			if t.Elem().Kind() == reflect.Uint8 {
				add("string(base64)")
				return
			}
			add("list")
			walk(path+"[]", t.Elem(), "", seen)
		case reflect.Map:
			add("map")
			walk(path+"{}", t.Elem(), "", seen)
		case reflect.String:
			add("string")
		case reflect.Bool:
			add("bool")
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
			reflect.Float32, reflect.Float64:
			add("number")
		case reflect.Interface:
			add("any")
		default:
			add(t.Kind().String())
		}
	}
	walk("", t, "", map[reflect.Type]bool{})
	sort.Strings(out)
	return out
}

func maps(m map[reflect.Type]bool, t reflect.Type) map[reflect.Type]bool {
	n := map[reflect.Type]bool{t: true}
	for k := range m {
		n[k] = true
	}
	return n
}

// TestJSONShapes keeps the documented -o json shapes: each command's
// output type, walked as encoding/json encodes it, must still hold every
// path checked in under testdata/shapes. Added paths are compatible and
// pass; a removed, renamed or retyped path (or a list that became an
// object) breaks every script that reads the output and fails: make it on
// purpose (NETSTATION_UPDATE_SHAPES=1 rewrites the files) and say so in
// docs/CLI.md.
func TestJSONShapes(t *testing.T) {
	for file, v := range map[string]any{
		"status.txt":            []testbed.Status{}, // a list with and without -t
		"disk-stats.txt":        disk.Stats{},
		"disk-grant.txt":        testbed.Grant{},
		"demo-capabilities.txt": testbed.CapabilityDemoResult{},
		"link-show.txt":         []testbed.LinkStatus{},
		"bench.txt":             testbed.BenchJSON{}, // every --stack, one size or many
	} {
		got := strings.Join(jsonShape(reflect.TypeOf(v)), "\n") + "\n"
		path := filepath.Join("testdata", "shapes", file)
		if os.Getenv("NETSTATION_UPDATE_SHAPES") != "" {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
			have[l] = true
		}
		var gone []string
		for _, l := range strings.Split(strings.TrimSpace(string(want)), "\n") {
			if !have[l] {
				gone = append(gone, l)
			}
			delete(have, l)
		}
		if len(gone) > 0 {
			t.Errorf("%s: the JSON shape lost or changed %d paths, which breaks readers (NETSTATION_UPDATE_SHAPES=1 go test -run TestJSONShapes rewrites it, on purpose):\n%s",
				file, len(gone), strings.Join(gone, "\n"))
		}
		if len(have) > 0 {
			t.Logf("%s: %d paths added (compatible; NETSTATION_UPDATE_SHAPES=1 records them)", file, len(have))
		}
	}
}
