package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sessioncache/sessioncache/redisstore"
)

// logText makes client text (a header, a field of a request) fit for a
// log line: at most 256 bytes of it, with every character that does not
// print escaped as \u{...} (redisstore.Invisible, the store's text rule, or
// not graphic), every byte of invalid UTF-8 as \x.. and the backslash as
// \\, so that a raw U+202E reorders nothing in a terminal and nothing
// invisible hides in a line.
func logText(v string) string {
	cut := ""
	if len(v) > 256 {
		v, cut = v[:256], "..."
	}
	clean := true
	for i := 0; i < len(v) && clean; i++ {
		clean = v[i] >= 0x20 && v[i] < 0x7f && v[i] != '\\'
	}
	if clean {
		return v + cut
	}
	var b strings.Builder
	for i := 0; i < len(v); {
		r, n := utf8.DecodeRuneInString(v[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, "\\x%02x", v[i])
		case r == '\\':
			b.WriteString(`\\`)
		case redisstore.Invisible(r) || !unicode.IsGraphic(r):
			fmt.Fprintf(&b, "\\u{%X}", r)
		default:
			b.WriteString(v[i : i+n])
		}
		i += n
	}
	return b.String() + cut
}
