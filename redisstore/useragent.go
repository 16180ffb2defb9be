package redisstore

import (
	"sort"
	"strings"
)

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

// uaByFirst lists, for each first byte, the codes of the phrases starting
// with it, longest first.
var uaByFirst, uaUnpack = func() (*[256][]byte, *strings.Replacer) {
	var by [256][]byte
	var unpack []string
	for code, ph := range uaPhrases {
		if ph == "" {
			continue
		}
		by[ph[0]] = append(by[ph[0]], byte(code))
		unpack = append(unpack, string(rune(code)), ph)
	}
	for _, codes := range by {
		sort.Slice(codes, func(i, j int) bool { return len(uaPhrases[codes[i]]) > len(uaPhrases[codes[j]]) })
	}
	return &by, strings.NewReplacer(unpack...)
}()

// appendPackedUserAgent appends the stored form of a user agent to dst:
// at each position the longest stock phrase that starts there becomes its
// code. Rotate packs into a pooled buffer, without allocating.
func appendPackedUserAgent(dst []byte, ua string) []byte {
	for i := 0; i < len(ua); {
		c := ua[i]
		matched := false
		for _, code := range uaByFirst[c] {
			if ph := uaPhrases[code]; strings.HasPrefix(ua[i:], ph) {
				dst = append(dst, code)
				i += len(ph)
				matched = true
				break
			}
		}
		if !matched {
			dst = append(dst, c)
			i++
		}
	}
	return dst
}

// packUserAgent returns the stored form of a user agent.
func packUserAgent(ua string) string {
	if ua == "" {
		return ""
	}
	var buf [MaxUserAgentLen]byte
	return string(appendPackedUserAgent(buf[:0], ua))
}

// unpackUserAgent returns the user agent a stored form stands for.
func unpackUserAgent(s string) string {
	if s == "" {
		return ""
	}
	return uaUnpack.Replace(s)
}
