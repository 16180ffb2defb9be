package main

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"unicode/utf8"
)

// The hot path's JSON without reflection: request bodies that are flat
// objects of plain strings (what every client sends), and the few fixed
// answers of the hot routes. Each takes a fast path only where its result
// is byte for byte that of encoding/json and the strict checks of
// decodeJSON; anything else takes the general path. The tests hold the two
// to it.

// stringFields is a request body whose fields are all strings: field
// returns the field a JSON key names exactly, or nil.
type stringFields interface {
	field(key string) *string
}

func (r *issueRequest) field(key string) *string {
	switch key {
	case "user_id":
		return &r.UserID
	case "client_id":
		return &r.ClientID
	case "device_id":
		return &r.DeviceID
	case "device_name":
		return &r.DeviceName
	case "ip_address":
		return &r.IPAddress
	case "user_agent":
		return &r.UserAgent
	}
	return dpopField(key, &r.DPoPJKT, &r.DPoPProof, &r.DPoPHTM, &r.DPoPHTU)
}

// dpopField returns the DPoP field a key names, of a login or a rotation.
func dpopField(key string, jkt, proof, htm, htu *string) *string {
	switch key {
	case "dpop_jkt":
		return jkt
	case "dpop_proof":
		return proof
	case "dpop_htm":
		return htm
	case "dpop_htu":
		return htu
	}
	return nil
}

func (r *rotateRequest) field(key string) *string {
	switch key {
	case "refresh_token":
		return &r.RefreshToken
	case "client_id":
		return &r.ClientID
	case "device_id":
		return &r.DeviceID
	case "ip_address":
		return &r.IPAddress
	case "user_agent":
		return &r.UserAgent
	}
	return dpopField(key, &r.DPoPJKT, &r.DPoPProof, &r.DPoPHTM, &r.DPoPHTU)
}

func (r *tokenRequest) field(key string) *string {
	if key == "refresh_token" {
		return &r.RefreshToken
	}
	return nil
}

// maxFlatFields bounds the keys decodeFlat takes; a body with more has a
// key twice or an unknown one, which the general path reports.
const maxFlatFields = 10

// decodeFlat fills dst from body and reports true if body is one JSON
// object whose keys are distinct fields of dst, spelled exactly, and whose
// values are strings without escapes or control characters, in valid UTF-8.
// Such a body is one that decodeJSON's general path accepts, with the same
// values. Otherwise dst is left alone and decodeFlat reports false: the
// general path decides, and words any refusal. The values are substrings
// of body.
func decodeFlat(body string, dst stringFields) bool {
	var spans [maxFlatFields]struct {
		field      *string
		start, end int
	}
	n := 0
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		i++
	} else {
		for {
			ks, ke, ok := plainString(body, i)
			if !ok {
				return false
			}
			f := dst.field(body[ks:ke])
			if f == nil || n == maxFlatFields {
				return false
			}
			for _, s := range spans[:n] {
				if s.field == f {
					return false
				}
			}
			i = skipSpace(body, ke+1)
			if i == len(body) || body[i] != ':' {
				return false
			}
			vs, ve, ok := plainString(body, skipSpace(body, i+1))
			if !ok {
				return false
			}
			spans[n].field, spans[n].start, spans[n].end = f, vs, ve
			n++
			i = skipSpace(body, ve+1)
			if i == len(body) {
				return false
			}
			if body[i] == '}' {
				i++
				break
			}
			if body[i] != ',' {
				return false
			}
			i = skipSpace(body, i+1)
		}
	}
	if skipSpace(body, i) != len(body) {
		return false
	}
	for _, s := range spans[:n] {
		*s.field = body[s.start:s.end]
	}
	return true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(s string, i int) int {
	for i < len(s) {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// plainString reads the JSON string that starts at s[i] and returns the
// bounds of its contents, if it has no escape and no control character
// and is valid UTF-8: then its contents are its value.
func plainString(s string, i int) (start, end int, ok bool) {
	if i >= len(s) || s[i] != '"' {
		return 0, 0, false
	}
	start = i + 1
	ascii := true
	for j := start; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return start, j, ascii || utf8.ValidString(s[start:j])
		case c == '\\' || c < 0x20:
			return 0, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return 0, 0, false
}

// jsonAppender is an answer body that writes itself as encoding/json's
// Encoder would (HTML characters escaped), without its final newline.
type jsonAppender interface {
	appendJSON(dst []byte) []byte
}

func (b errorBody) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"error":`...)
	dst = appendJSONString(dst, b.Error)
	if b.ErrorDescription != "" {
		dst = append(dst, `,"error_description":`...)
		dst = appendJSONString(dst, b.ErrorDescription)
	}
	if b.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = appendJSONString(dst, b.Reason)
	}
	return append(dst, '}')
}

func (b grantBody) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"access_token":`...)
	dst = appendJSONString(dst, b.AccessToken)
	dst = append(dst, `,"token_type":`...)
	dst = appendJSONString(dst, b.TokenType)
	dst = append(dst, `,"expires_in":`...)
	dst = strconv.AppendInt(dst, b.ExpiresIn, 10)
	dst = append(dst, `,"refresh_token":`...)
	dst = appendJSONString(dst, b.RefreshToken)
	dst = append(dst, `,"session_id":`...)
	dst = appendJSONString(dst, b.SessionID)
	dst = append(dst, `,"user_id":`...)
	dst = appendJSONString(dst, b.UserID)
	dst = append(dst, `,"client_id":`...)
	dst = appendJSONString(dst, b.ClientID)
	dst = append(dst, `,"expires_at":`...)
	dst = appendJSONString(dst, b.ExpiresAt)
	dst = append(dst, `,"session_expires_at":`...)
	dst = appendJSONString(dst, b.SessionExpiresAt)
	return append(dst, '}')
}

func (b introspectBody) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"active":`...)
	dst = strconv.AppendBool(dst, b.Active)
	dst = appendStringField(dst, "sub", b.Sub)
	dst = appendStringField(dst, "sid", b.Sid)
	dst = appendStringField(dst, "client_id", b.ClientID)
	dst = appendIntField(dst, "exp", b.Exp)
	dst = appendIntField(dst, "iat", b.Iat)
	dst = appendStringField(dst, "token_type", b.TokenType)
	if b.Cnf != nil {
		dst = append(dst, `,"cnf":{"jkt":`...)
		dst = appendJSONString(dst, b.Cnf.JKT)
		dst = append(dst, '}')
	}
	dst = appendStringField(dst, "user_id", b.UserID)
	dst = appendStringField(dst, "session_id", b.SessionID)
	dst = appendStringField(dst, "expires_at", b.ExpiresAt)
	dst = appendStringField(dst, "session_expires_at", b.SessionExpiresAt)
	return append(dst, '}')
}

// appendStringField appends ,"name":v unless v is empty (omitempty).
func appendStringField(dst []byte, name, v string) []byte {
	if v == "" {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendJSONString(dst, v)
}

// appendIntField appends ,"name":v unless v is 0 (omitempty).
func appendIntField(dst []byte, name string, v int64) []byte {
	if v == 0 {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return strconv.AppendInt(dst, v, 10)
}

func (b revokedBody) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"revoked":`...)
	dst = strconv.AppendInt(dst, int64(b.Revoked), 10)
	return append(dst, '}')
}

// appendJSONString appends s as encoding/json writes a string with HTML
// escaping on (its default): ", \ and control characters escaped, <, > and
// & as \u003c, \u003e and \u0026, U+2028 and U+2029 escaped, and each byte
// of invalid UTF-8 replaced by \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// bodyBuffers recycles the buffers request bodies are read into (at most
// maxBodyBytes).
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// answerBuffers recycles the buffers answers are encoded into.
var answerBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// encodeBody returns body as encoding/json's Encoder writes it (with its
// final newline) in a pooled buffer, to be given back with putBody.
func encodeBody(body any) (*[]byte, error) {
	p := answerBuffers.Get().(*[]byte)
	if a, ok := body.(jsonAppender); ok {
		*p = append(a.appendJSON((*p)[:0]), '\n')
		return p, nil
	}
	b, err := json.Marshal(body)
	*p = append(append((*p)[:0], b...), '\n')
	return p, err
}

// putBody gives a buffer of encodeBody back, unless it grew large.
func putBody(p *[]byte) {
	if cap(*p) <= 64<<10 {
		answerBuffers.Put(p)
	}
}
