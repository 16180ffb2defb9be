package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Every text field of the API refuses each class of invisible character
// (the store's text rule, redisstore.Invisible) with 400 invalid_request
// naming the field, on its own and added to visible text, and nothing is
// stored.
func TestInvisibleTextRefused(t *testing.T) {
	e := newTestEnv(t)
	g := e.login(alice, "laptop")
	before := e.b.Snapshot(t)
	classes := map[string]string{
		"tag letter A U+E0041": "\U000E0041", "zero width space U+200B": "\u200b", "word joiner U+2060": "\u2060",
		"BOM U+FEFF": "\ufeff", "soft hyphen U+00AD": "\u00ad", "RLO U+202E": "\u202e", "Hangul filler U+3164": "\u3164",
		"C0 control U+0001": "\x01",
	}
	body := func(fields map[string]string) string {
		b, err := json.Marshal(fields)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for class, c := range classes {
		for _, v := range []string{c, "admin" + c, "iPhone" + c + c} {
			for field, reason := range map[string]string{"user_id": "user id", "device_id": "device id", "device_name": "device name",
				"ip_address": "IP address", "user_agent": "user agent", "client_id": "client_id"} {
				login := map[string]string{"user_id": alice, "client_id": testClient, field: v}
				r := e.send("POST", "/v1/sessions", body(login), http.Header{"Content-Type": {"application/json"}})
				if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.Contains(r.str("reason"), reason) {
					t.Errorf("login with %s %q (%s): %d %s, want 400 invalid_request about %s", field, v, class, r.status, r.raw, reason)
				}
				if field == "user_id" || field == "device_name" || field == "client_id" {
					continue
				}
				rotate := map[string]string{"refresh_token": g.str("refresh_token"), field: v}
				r = e.send("POST", "/v1/tokens/rotate", body(rotate), http.Header{"Content-Type": {"application/json"}})
				if r.status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.Contains(r.str("reason"), reason) {
					t.Errorf("rotate with %s %q (%s): %d %s, want 400 invalid_request about %s", field, v, class, r.status, r.raw, reason)
				}
			}
			r := e.send("GET", "/v1/users/"+url.PathEscape(v)+"/sessions", "", nil)
			if r.status != http.StatusBadRequest || !strings.Contains(r.str("reason"), "user id") {
				t.Errorf("list the sessions of %q (%s): %d %s, want 400 about the user id", v, class, r.status, r.raw)
			}
		}
	}
	if d := cmp.Diff(before, e.b.Snapshot(t)); d != "" {
		t.Errorf("refused text changed Redis (-before +after):\n%s", d)
	}
}
