package redisstore

import "strings"

// Redis keeps a small hash as a compact listpack only while every value is
// at most hash-max-listpack-value bytes (64 by default); one longer value
// turns the whole session into a hashtable and doubles its memory. Browser
// user agents run to 100-150 bytes, but most of that is a few stock phrases.
// Input never holds control characters, so bytes 0x01-0x1F stand for those
// phrases in Redis. The table is part of the stored format: entries may be
// added at unused codes, never changed or removed.
var uaPhrases = [...]string{
	0x01: "Mozilla/5.0 (",
	0x02: "AppleWebKit/537.36 (KHTML, like Gecko) ",
	0x03: "AppleWebKit/605.1.15 (KHTML, like Gecko) ",
	0x04: "Chrome/",
	0x05: "Safari/537.36",
	0x06: "Mobile Safari/537.36",
	0x07: "Safari/604.1",
	0x08: "Safari/605.1.15",
	0x09: "Version/",
	0x0a: "Mobile/15E148 ",
	0x0b: "Firefox/",
	0x0c: "Gecko/20100101 ",
	0x0d: "Windows NT 10.0; Win64; x64",
	0x0e: "Macintosh; Intel Mac OS X ",
	0x0f: "X11; Linux x86_64",
	0x10: "iPhone; CPU iPhone OS ",
	0x11: " like Mac OS X",
	0x12: "Linux; Android ",
	0x13: "Edg/",
	0x14: ".0.0.0",
	0x15: "iPad; CPU OS ",
	0x16: "X11; Ubuntu; Linux x86_64",
	0x17: "OPR/",
	0x18: "SamsungBrowser/",
	0x19: "CriOS/",
	0x1a: "FxiOS/",
}

var uaPack, uaUnpack = func() (*strings.Replacer, *strings.Replacer) {
	var pack, unpack []string
	// Longer phrases first: the replacer takes the first match in argument order.
	for _, n := range []int{0x03, 0x02, 0x06, 0x16, 0x0d, 0x0e, 0x10, 0x12, 0x0f, 0x18, 0x0c, 0x0a, 0x11, 0x15, 0x01, 0x08, 0x05, 0x07, 0x09, 0x0b, 0x04, 0x14, 0x19, 0x1a, 0x13, 0x17} {
		pack = append(pack, uaPhrases[n], string(rune(n)))
		unpack = append(unpack, string(rune(n)), uaPhrases[n])
	}
	return strings.NewReplacer(pack...), strings.NewReplacer(unpack...)
}()

// packUserAgent returns the stored form of a user agent.
func packUserAgent(ua string) string {
	if ua == "" {
		return ""
	}
	return uaPack.Replace(ua)
}

// unpackUserAgent returns the user agent a stored form stands for.
func unpackUserAgent(s string) string {
	if s == "" {
		return ""
	}
	return uaUnpack.Replace(s)
}
