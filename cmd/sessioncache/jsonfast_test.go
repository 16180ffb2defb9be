package main

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// flatCases are bodies for the fast path and the general one: what clients
// send, and every way to step off the fast path.
var flatCases = []string{
	`{"refresh_token":"sct_abc","device_id":"","ip_address":"203.0.113.42","user_agent":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}`,
	`{"refresh_token":"sct_abc"}`,
	" \t\r\n{ \"refresh_token\" : \"sct_abc\" , \"device_id\":\"d\" } \n",
	`{}`,
	`{ }`,
	``,
	`   `,
	`{"user_id":"auth0|507f1f77bcf86cd799439011","device_name":"Zoë's iPhone","ip_address":"2001:db8::1"}`,
	`{"user_id":"用户","device_name":"<script>&"}`,
	`{"refresh_token":"a","refresh_token":"b"}`,
	`{"REFRESH_TOKEN":"a"}`,
	`{"refresh_Token":"a"}`,
	`{"u\u017fer_id":"a"}`,
	"{\"u\u017fer_id\":\"a\"}",
	`{"refresh_token":"a\"b"}`,
	`{"refresh_token":"a\\b"}`,
	`{"refresh_token":"a\/b"}`,
	`{"refresh_token":"\u0041"}`,
	`{"refresh_token":"\ud800"}`,
	"{\"refresh_token\":\"a\x01b\"}",
	"{\"refresh_token\":\"a\xffb\"}",
	"{\"refresh_token\":\"a\xc3\"}",
	`{"refresh_token":null}`,
	`{"refresh_token":1}`,
	`{"refresh_token":["a"]}`,
	`{"refresh_token":{"a":"b"}}`,
	`{"refresh_token":"a",}`,
	`{"refresh_token":"a"`,
	`{"refresh_token" "a"}`,
	`{"refresh_token":"a"}{}`,
	`{"refresh_token":"a"} x`,
	`{"refresh_token":"a"}}`,
	`{,"refresh_token":"a"}`,
	`{"refresh_token":"a" "device_id":"b"}`,
	`{"nope":"a"}`,
	`["refresh_token"]`,
	`"refresh_token"`,
	"\xef\xbb\xbf{\"refresh_token\":\"a\"}",
	`{"refresh_token":"a","device_id":"b","ip_address":"c","user_agent":"d","device_id":"e"}`,
	`{"user_id":"a","device_id":"b","device_name":"c","ip_address":"d","user_agent":"e","user_id":"f","device_id":"g","device_name":"h","ip_address":"i"}`,
}

// newFlatTargets returns a fresh value of each request type.
func newFlatTargets() []stringFields {
	return []stringFields{&issueRequest{}, &rotateRequest{}, &tokenRequest{}}
}

// checkFlat holds decodeFlat to the general path on body: whatever the
// fast path accepts, the general one accepts with the same values; what it
// does not accept, it leaves untouched.
func checkFlat(t *testing.T, body string) (accepted int) {
	t.Helper()
	for _, fast := range newFlatTargets() {
		slow := reflect.New(reflect.TypeOf(fast).Elem()).Interface().(stringFields)
		ok := decodeFlat(body, fast)
		if !ok {
			if !reflect.ValueOf(fast).Elem().IsZero() {
				t.Errorf("%T %q: refused but changed: %+v", fast, body, fast)
			}
			continue
		}
		accepted++
		if err := decodeStrict([]byte(body), slow); err != nil {
			t.Errorf("%T %q: the fast path accepts what the general one refuses: %v", fast, body, err)
			continue
		}
		if diff := cmp.Diff(slow, fast, cmp.AllowUnexported(rotateRequest{})); diff != "" {
			t.Errorf("%T %q: (-general +fast)\n%s", fast, body, diff)
		}
	}
	return accepted
}

func TestDecodeFlatAgreesWithTheGeneralPath(t *testing.T) {
	for _, body := range flatCases {
		checkFlat(t, body)
	}
	// What clients send does take the fast path.
	for _, tc := range []struct {
		body string
		dst  stringFields
	}{
		{flatCases[0], &rotateRequest{}},
		{flatCases[2], &rotateRequest{}},
		{flatCases[7], &issueRequest{}},
		{`{"refresh_token":"sct_abc"}`, &tokenRequest{}},
	} {
		if !decodeFlat(tc.body, tc.dst) {
			t.Errorf("%T %q: not on the fast path", tc.dst, tc.body)
		}
	}
	var r rotateRequest
	if !decodeFlat(flatCases[0], &r) || r.RefreshToken != "sct_abc" || r.IPAddress != "203.0.113.42" || !strings.HasPrefix(r.UserAgent, "Mozilla/5.0") {
		t.Errorf("decoded %+v", r)
	}
}

func FuzzDecodeFlat(f *testing.F) {
	for _, body := range flatCases {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body string) { checkFlat(t, body) })
}

// Every field a request type's JSON names is the one field() returns.
func TestStringFieldsMatchTheTags(t *testing.T) {
	for _, dst := range newFlatTargets() {
		v := reflect.ValueOf(dst).Elem()
		for i := range v.NumField() {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
			if name == "" {
				continue
			}
			if got := dst.field(name); got != v.Field(i).Addr().Interface().(*string) {
				t.Errorf("%T.field(%q) is not the field %s", dst, name, v.Type().Field(i).Name)
			}
		}
		if dst.field("nope") != nil {
			t.Errorf("%T.field(nope) is a field", dst)
		}
	}
}

// Hard strings for an encoder: HTML, quotes, control characters, line
// separators, invalid UTF-8.
var hardStrings = []string{
	"", "plain", "auth0|507f1f77bcf86cd799439011", "Zoë", "用户", `a"b\c`, "<script>&amp;</script>",
	"\x00\x01\x1f\x7f", "\b\f\n\r\t", "\u2028\u2029", "\xff", "a\xc3", "\xed\xa0\x80", "😀", "\uFFFD",
}

// checkAppend compares appendJSON with encoding/json's Encoder for the
// answer bodies built from s and n.
func checkAppend(t *testing.T, s string, n int64) {
	t.Helper()
	for _, body := range []jsonAppender{
		errorBody{Error: s, ErrorDescription: s, Reason: s},
		errorBody{Error: s},
		grantBody{RefreshToken: s, SessionID: s, UserID: s, ExpiresAt: s, SessionExpiresAt: s},
		introspectBody{Active: n%2 == 0, Sub: s, Sid: s, Exp: n, Iat: -n, TokenType: s, UserID: s, SessionID: s, ExpiresAt: s, SessionExpiresAt: s},
		introspectBody{Active: true, Sub: s, TokenType: s, Cnf: &confirmation{JKT: s}, UserID: s},
		introspectBody{},
		revokedBody{Revoked: int(n)},
	} {
		var want strings.Builder
		if err := json.NewEncoder(&want).Encode(body); err != nil {
			t.Fatal(err)
		}
		got, err := encodeBody(body)
		if err != nil {
			t.Fatal(err)
		}
		if string(*got) != want.String() {
			t.Errorf("%T %q: got %s want %s", body, s, *got, want.String())
		}
		putBody(got)
	}
}

func TestAppendJSONIsEncodingJSON(t *testing.T) {
	for i, s := range hardStrings {
		checkAppend(t, s, int64(i*1000-3))
	}
	checkAppend(t, strings.Join(hardStrings, ""), 0)
	// Bodies without an appender are encoding/json's.
	got, err := encodeBody(map[string]string{"status": "<ok>"})
	if err != nil || string(*got) != "{\"status\":\"\\u003cok\\u003e\"}\n" {
		t.Errorf("map body: %q, %v", *got, err)
	}
}

func FuzzAppendJSON(f *testing.F) {
	for i, s := range hardStrings {
		f.Add(s, int64(i))
	}
	f.Fuzz(func(t *testing.T, s string, n int64) { checkAppend(t, s, n) })
}

func TestTimestampIsTheLayout(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 11, 30, 19, 1, 2, 345678901, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 999999, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 29, 2, 30, 0, 0, time.FixedZone("CEST", 2*3600)),
		time.UnixMilli(1<<41 + 7),
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		times = append(times, time.Unix(rnd.Int64N(253402300800), rnd.Int64N(1e9)).In(time.FixedZone("x", rnd.IntN(50000)-25000)))
	}
	for _, tm := range times {
		if got, want := timestamp(tm), tm.UTC().Format(timestampLayout); got != want {
			t.Errorf("timestamp(%v) = %s, want %s", tm, got, want)
		}
	}
}
