package redisstore

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestREADMEFieldTable: the README's table of session hash fields is the
// schema.
func TestREADMEFieldTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z])` \\| (live|tombstone) \\| (.+) \\|$")
	var got []field
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		got = append(got, field{name: m[1], tombstone: m[2] == "tombstone", doc: m[3]})
	}
	want := append([]field(nil), schema...)
	// The README may link where schema.go says "below".
	norm := func(fs []field) []field {
		for i := range fs {
			fs[i].doc = regexp.MustCompile(`\s*\((layout below|layout in .*)\)`).ReplaceAllString(fs[i].doc, "")
		}
		return fs
	}
	if d := cmp.Diff(norm(want), norm(got), cmp.AllowUnexported(field{})); d != "" {
		t.Errorf("README field table against schema.go (-schema +README):\n%s", d)
	}
}

// TestSchemaMatchesScripts: every field the Go code names appears in a
// script, and the s layout offsets are the ones rotate.lua uses.
func TestSchemaMatchesScripts(t *testing.T) {
	var all strings.Builder
	for _, name := range []string{"issue", "rotate", "evict", "revoke", "revoke_all", "inspect", "legacy", "import"} {
		b, err := os.ReadFile("../lua/" + name + ".lua")
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	lua := all.String()
	for _, f := range schema {
		if !strings.Contains(lua, "'"+f.name+"'") {
			t.Errorf("field %q of schema.go is in no script", f.name)
		}
	}
	rotate, _ := os.ReadFile("../lua/rotate.lua")
	for what, needle := range map[string]string{
		"extend after": "string.sub(s, 1, 13)", "last used": "string.sub(s, 15, 27)",
		"creator call id": "string.sub(s, 28, 35)", "checksum": "string.sub(s, 36, 39)",
	} {
		if !strings.Contains(string(rotate), needle) {
			t.Errorf("rotate.lua does not read %s as schema.go lays it out (%s)", what, needle)
		}
	}
	if stLast != 14 || stCall != 27 || stSum != 35 || stRest != 39 {
		t.Errorf("s layout offsets changed (%d %d %d %d): update rotate.lua, issue.lua, evict.lua and this test", stLast, stCall, stSum, stRest)
	}
}

// TestREADMEErrorTable: the README's error table has a row for every
// exported error variable of errors.go, and no row for one that is gone.
func TestREADMEErrorTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("errors.go")
	if err != nil {
		t.Fatal(err)
	}
	var declared, documented []string
	for _, m := range regexp.MustCompile(`(?m)^\s*(Err[A-Za-z]+)\s*(?:error\s*)?=`).FindAllStringSubmatch(string(src), -1) {
		declared = append(declared, m[1])
	}
	for _, m := range regexp.MustCompile("(?m)^\\| `(Err[A-Za-z]+)`").FindAllStringSubmatch(string(readme), -1) {
		documented = append(documented, m[1])
	}
	if len(declared) < 9 {
		t.Fatalf("found only %d errors in errors.go: %v", len(declared), declared)
	}
	slices.Sort(declared)
	slices.Sort(documented)
	if d := cmp.Diff(declared, documented); d != "" {
		t.Errorf("README error table against errors.go (-errors.go +README):\n%s", d)
	}
}

// TestReplyCodes: one number per kind of reply, and the scripts give exactly
// the codes schema.go names.
func TestReplyCodes(t *testing.T) {
	codes := map[string]int{"codeNone": codeNone, "codeOK": codeOK, "codeHandOut": codeHandOut, "codeReused": codeReused,
		"codeRevoked": codeRevoked, "codeExpired": codeExpired, "codeClient": codeClient, "codeAtCap": codeAtCap, "codeExists": codeExists,
		"codeWrongKey": codeWrongKey, "codeNoKey": codeNoKey,
		"codeAdvanced": codeAdvanced, "codeUnchanged": codeUnchanged, "codeEnded": codeEnded, "codeCorrupt": codeCorrupt,
		"codeMembers": codeMembers}
	named := map[int]string{}
	for name, c := range codes {
		if other, ok := named[c]; ok {
			t.Errorf("%s and %s are both %d", name, other, c)
		}
		named[c] = name
	}
	given := map[int][]string{}
	for _, script := range []string{"issue", "evict", "rotate", "revoke", "revoke_all", "legacy", "import", "move_take", "move_put"} {
		b, err := os.ReadFile("../lua/" + script + ".lua")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for _, m := range regexp.MustCompile(`\{(\d+), nows?\b`).FindAllStringSubmatch(string(b), -1) {
			c, _ := strconv.Atoi(m[1])
			if !seen[c] {
				seen[c] = true
				given[c] = append(given[c], script)
			}
		}
	}
	for c, scripts := range given {
		if named[c] == "" {
			t.Errorf("%v answer code %d, which schema.go does not name", scripts, c)
		}
	}
	for c, name := range named {
		if len(given[c]) == 0 {
			t.Errorf("%s (%d) is given by no script", name, c)
		}
	}
}
