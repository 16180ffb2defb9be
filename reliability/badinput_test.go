package reliability_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/tokenlayout"
	"github.com/sessioncache/sessioncache/redisstore"
)

// badRequest is one hostile HTTP request.
type badRequest struct {
	method, path, ctype, auth string
	body                      []byte
}

// hostile builds the pieces of hostile requests around real tokens, so
// that a request that should change nothing has something to change.
func hostile(tokens []string, user, session string) (methods, paths, ctypes []string, bodies [][]byte) {
	methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "FOO"}
	paths = []string{
		"/v1/sessions", "/v1/tokens/rotate", "/v1/tokens/introspect", "/v1/tokens/revoke",
		"/v1/users/" + user + "/sessions", "/v1/users/" + user + "/sessions/" + session,
		"/v2/sessions", "/v1/sessions/", "//v1/sessions", "/V1/SESSIONS", "/v1/tokens/rotate?x=1",
		"/v1/tokens/rotate?refresh_token=" + tokens[0], "/v1/users/%00/sessions", "/v1/users/%ff%fe/sessions",
		"/v1/users/" + user + "/sessions/%2e%2e%2f%2e%2e", "/v1/users/../../metrics", "/v1/users/" + strings.Repeat("a", 10000) + "/sessions",
		"/v1/users/ＵＳＥＲ/sessions", "/v1/users/" + user + "\u202e/sessions", "/v1/users/" + strings.ToUpper(user) + "/sessions/" + session + "x",
		"/v1/tokens/" + tokens[1], "/readyz/../v1/sessions", "/metrics?x=" + strings.Repeat("%", 100), "/%", "/v1/users/" + user + "/sessions?except=zzz",
		"/oauth2/token", "/oauth2/token?refresh_token=" + tokens[2], "/v1/auth", "/.well-known/jwks.json",
	}
	ctypes = []string{"application/json", "", "text/plain", "application/x-www-form-urlencoded",
		"multipart/form-data; boundary=x", "application/json, text/plain", "application/jsonx", "json"}
	tok := func(i int) string { return tokens[i%len(tokens)] }
	login := func(fields string) []byte { return []byte(`{"client_id":"` + clientID + `",` + fields + `}`) }
	bodies = [][]byte{
		nil, []byte(""), []byte("{"), []byte("}"), []byte("null"), []byte("[]"), []byte("[{}]"), []byte("0"), []byte(`"x"`),
		[]byte(`{"refresh_token":null}`), []byte(`{"refresh_token":123}`), []byte(`{"refresh_token":["` + tok(0) + `"]}`),
		[]byte(`{"refresh_token":"` + tok(0)[:20] + `"}`), []byte(`{"refresh_token":"` + tok(0) + `x"}`),
		[]byte(`{"refresh_token":"` + tok(1) + "\x00" + `"}`),
		[]byte(`{"refresh_token":"` + tok(3) + `","admin":true}`), []byte(`{"refresh_token":"` + tok(4) + `"} trailing`),
		[]byte(`{"refresh_token":"` + tok(5) + `"}{"refresh_token":"` + tok(0) + `"}`),
		[]byte("\xef\xbb\xbf" + `{"refresh_token":"` + tok(1) + `"}`), []byte(`{"refresh_token":"\ud800` + tok(2) + `"}`),
		// Logins with a client id, each wrong in one other way.
		login(`"user_id":"a\u0007b"`), login(`"user_id":"` + strings.Repeat("x", 257) + `"`), login(`"user_id":"` + user + `\u0000"`), login(`"user_id":"\u202e` + user + `"`),
		login(`"user_id":"` + user + `","device_name":"` + strings.Repeat("é", 40000) + `"`),
		login(`"user_id":"` + user + `","ip_address":"999.1.1.1"`), login(`"user_id":"` + user + `","unknown":1`),
		login(`"user_id":1e999999`), []byte("\xff\xfe\xfd"), []byte("\x00\x00\x00\x00"), login(`"user_id":"` + user + "\xff" + `"`),
		// Logins whose client id alone is wrong.
		[]byte(`{"user_id":"` + user + `"}`), []byte(`{"user_id":"` + user + `","client_id":""}`), []byte(`{"user_id":"` + user + `","client_id":"a b"}`),
		[]byte(`{"user_id":"` + user + `","client_id":"` + strings.Repeat("c", 129) + `"}`), []byte(`{"user_id":"` + user + `","client_id":"\u0000"}`),
		[]byte(`{"user_id":"` + user + `","client_id":["` + clientID + `"]}`), []byte(`{"user_id":"` + user + `","client_id":"é"}`),
		// Token requests (RFC 6749 section 6) that must rotate nothing: no
		// client, a scope, a parameter twice, another grant, a forged
		// token, a client the session was not issued to.
		[]byte("grant_type=refresh_token&refresh_token=" + tok(0)), []byte("grant_type=refresh_token&client_id=" + clientID + "&scope=openid&refresh_token=" + tok(1)),
		[]byte("grant_type=refresh_token&client_id=" + clientID + "&refresh_token=" + tok(2) + "&refresh_token=" + tok(3)),
		[]byte("grant_type=password&client_id=" + clientID + "&username=" + user + "&password=x"), []byte("grant_type=refresh_token&client_id=" + clientID + "&refresh_token=" + tok(4) + "x"),
		[]byte("grant_type=refresh_token&client_id=another-client&refresh_token=" + tok(5)), []byte("grant_type=refresh_token&client_id=%00&refresh_token=" + tok(0)),
		bytes.Repeat([]byte("["), 100000), []byte(`{"refresh_token":"` + strings.Repeat("A", 1<<20) + `"}`),
		bytes.Repeat([]byte(`{"a":`), 10000), []byte(strings.Repeat(" ", 70000) + `{"refresh_token":"` + tok(0) + `"}`),
	}
	return methods, paths, ctypes, bodies
}

// TestServiceBadInput sends hostile requests (malformed JSON, huge and
// deeply nested bodies, odd Unicode, NUL bytes, wrong content types,
// unknown routes and methods, with and without the API key) to a service
// holding live sessions. No answer may be a 5xx other than 503, the service
// must not panic or die, and the keyspace must not change: none of these
// requests may rotate or revoke anything.
func TestServiceBadInput(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	svc := startService(t, srv.Addr, nil)
	svc.waitReady(t)
	user := newUUID()
	var tokens []string
	for i := 0; i < 6; i++ {
		tokens = append(tokens, svc.login(t, user))
	}
	_, list, err := svc.call(context.Background(), "GET", "/v1/users/"+user+"/sessions", nil)
	if err != nil {
		t.Fatal(err)
	}
	session := list["sessions"].([]any)[0].(map[string]any)["session_id"].(string)
	b := &redistest.Backend{Kind: redistest.Real, Client: srv.Client(t), Prefix: svc.env["SESSIONCACHE_KEY_PREFIX"]}
	before := b.Snapshot(t)

	methods, paths, ctypes, bodies := hostile(tokens, user, session)
	auths := []string{"Bearer " + svc.APIKey, "", "Bearer wrong", "Basic " + svc.APIKey, "Bearer " + svc.APIKey + " x"}
	var reqs []badRequest
	// Every body on every POST route with JSON and the key: the bodies alone.
	for _, p := range paths[:4] {
		for _, body := range bodies {
			reqs = append(reqs, badRequest{"POST", p, "application/json", auths[0], body})
		}
	}
	// Every body at the token endpoint as a public client sends it: a form,
	// no Authorization.
	for _, body := range bodies {
		reqs = append(reqs, badRequest{"POST", "/oauth2/token", "application/x-www-form-urlencoded", "", body})
	}
	// Valid bodies in every other way wrong.
	for _, ct := range ctypes[1:] {
		for _, p := range paths[1:4] {
			reqs = append(reqs, badRequest{"POST", p, ct, auths[0], []byte(`{"refresh_token":"` + tokens[0] + `"}`)})
		}
	}
	for _, a := range auths[1:] {
		for _, p := range paths[:6] {
			reqs = append(reqs, badRequest{"POST", p, "application/json", a, []byte(`{"refresh_token":"` + tokens[1] + `","user_id":"` + user + `"}`)},
				badRequest{"DELETE", p, "application/json", a, nil})
		}
	}
	// Random combinations.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < pick(600, 20000); i++ {
		reqs = append(reqs, badRequest{methods[rng.IntN(len(methods))], paths[rng.IntN(len(paths))], ctypes[rng.IntN(len(ctypes))],
			auths[rng.IntN(len(auths))], bodies[rng.IntN(len(bodies))]})
	}
	statuses := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failures []string
	next := make(chan badRequest)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range next {
				code, err := svc.send(r)
				mu.Lock()
				statuses[code]++
				if err != nil || code >= 500 && code != 503 {
					failures = append(failures, fmt.Sprintf("%s %.60q (%s, %d-byte body): %d %v", r.method, r.path, r.ctype, len(r.body), code, err))
				}
				mu.Unlock()
			}
		}()
	}
	for _, r := range reqs {
		// A well-formed, authorised logout is not hostile: it may write.
		if r.method == "DELETE" && r.auth == auths[0] && (r.path == paths[4] || r.path == paths[5]) {
			continue
		}
		next <- r
	}
	close(next)
	wg.Wait()
	after := b.Snapshot(t)
	changed := cmp.Diff(before, after)
	figure(t, "service_bad_input", "requests", len(reqs), "statuses", fmt.Sprint(statuses), "server_errors", len(failures),
		"keyspace_changed", changed != "", "alive", svc.status("/healthz") == 200)
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... %d more", len(failures)-10)
			break
		}
		t.Error(f)
	}
	if changed != "" {
		t.Errorf("hostile requests changed the keyspace (-before +after):\n%s", changed)
	}
	if svc.status("/healthz") != 200 {
		t.Error("the service does not answer /healthz after the hostile requests")
	}
	for _, tok := range tokens {
		if code, out, _ := svc.call(context.Background(), "POST", "/v1/tokens/introspect", map[string]any{"refresh_token": tok}); code != 200 || out["active"] != true {
			t.Errorf("a session did not survive the hostile requests: %d %v", code, out)
		}
	}
}

// TestServiceAmbiguousRequests sends requests that a proxy or WAF in front
// may read differently from the service, one at a time on a fresh session.
// A strict service refuses them and rotates nothing.
func TestServiceAmbiguousRequests(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	svc := startService(t, srv.Addr, nil)
	svc.waitReady(t)
	b := &redistest.Backend{Kind: redistest.Real, Client: srv.Client(t), Prefix: svc.env["SESSIONCACHE_KEY_PREFIX"]}
	user := newUUID()
	other := svc.login(t, user)
	var lenient []string
	for _, amb := range []struct {
		what, ctype string
		body        func(tok, other string) string
	}{
		{"JSON with a duplicate key (the last one wins)", "application/json",
			func(tok, other string) string {
				return `{"refresh_token":"` + other + `","refresh_token":"` + tok + `"}`
			}},
		{"a UTF-8 body labelled charset=utf-16", "application/json; charset=utf-16",
			func(tok, _ string) string { return `{"refresh_token":"` + tok + `"}` }},
	} {
		tok := svc.login(t, user)
		before := b.Snapshot(t)
		code, _ := svc.send(badRequest{"POST", "/v1/tokens/rotate", amb.ctype, "Bearer " + svc.APIKey, []byte(amb.body(tok, other))})
		if cmp.Diff(before, b.Snapshot(t)) != "" {
			lenient = append(lenient, fmt.Sprintf("%s: %d, and the token was rotated", amb.what, code))
		}
	}
	figure(t, "service_ambiguous_requests", "sent", 2, "acted_on", len(lenient))
	if len(lenient) > 0 {
		t.Fatalf("the service acts on ambiguous requests: %s", strings.Join(lenient, "; "))
	}
}

// send sends r and returns the status code.
func (s *service) send(r badRequest) (int, error) {
	req, err := http.NewRequestWithContext(context.Background(), r.method, s.URL+r.path, bytes.NewReader(r.body))
	if err != nil {
		// A request Go itself refuses to build (an invalid method or URL).
		return 0, nil
	}
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	if r.auth != "" {
		req.Header.Set("Authorization", r.auth)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		var ue interface{ Timeout() bool }
		if errors.As(err, &ue) && ue.Timeout() {
			return 0, err
		}
		// The server may close a connection on a body it refuses to read
		// to the end; that is not a failure, but the service must be alive.
		if s.status("/healthz") != 200 {
			return 0, fmt.Errorf("service down after: %w", err)
		}
		return 0, nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// FuzzServiceHTTP sends arbitrary requests to the service. Any answer but
// a 5xx other than 503 is fine; a refused request (4xx) must change
// nothing. go test runs the seeds; go test -fuzz=FuzzServiceHTTP
// ./reliability explores (each fuzzing worker process starts its own
// service).
func FuzzServiceHTTP(f *testing.F) {
	srv := startServer(f)
	svc := startService(f, srv.Addr, nil)
	svc.waitReady(f)
	user := newUUID()
	var toks []string
	for i := 0; i < 3; i++ {
		toks = append(toks, svc.login(f, user))
	}
	b := &redistest.Backend{Kind: redistest.Real, Client: srv.Client(f), Prefix: svc.env["SESSIONCACHE_KEY_PREFIX"]}
	f.Add("POST", "/v1/tokens/rotate", "application/json", []byte(`{"refresh_token":"`+toks[0]+`"x}`))
	f.Add("POST", "/v1/tokens/revoke", "text/plain", []byte(`{"refresh_token":"`+toks[1]+`"}`))
	f.Add("POST", "/v1/sessions", "application/json", []byte(`{"user_id":"\u0000","client_id":"`+clientID+`"}`))
	f.Add("POST", "/oauth2/token", "application/x-www-form-urlencoded", []byte("grant_type=refresh_token&refresh_token="+toks[2]))
	f.Add("GET", "/v1/users/%00/sessions", "", []byte(nil))
	f.Add("PUT", "/v2", "application/json", []byte("\xff"))
	f.Fuzz(func(t *testing.T, method, path, ctype string, body []byte) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		before := b.Snapshot(t)
		r := badRequest{method: method, path: path, ctype: ctype, auth: "Bearer " + svc.APIKey, body: body}
		code, err := svc.send(r)
		if err != nil {
			t.Fatal(err)
		}
		if code >= 500 && code != 503 {
			t.Fatalf("%s %q: %d", method, path, code)
		}
		if code >= 400 {
			if d := cmp.Diff(before, b.Snapshot(t)); d != "" {
				t.Fatalf("%s %q answered %d but changed the keyspace:\n%s", method, path, code, d)
			}
		}
	})
}

// FuzzTokenInput presents arbitrary strings as tokens to the library.
// Garbage and forgeries must get ErrMalformed or ErrUnknown, never panic,
// and never change the keyspace (a forgery must not revoke anything).
func FuzzTokenInput(f *testing.F) {
	b := redistest.For(f, redistest.Mini)
	st := wrap(f, b.Client, redisstore.Options{KeyPrefix: b.Prefix})
	ctx := context.Background()
	g, err := st.Issue(ctx, "fuzz-user", redisstore.Client{})
	if err != nil {
		f.Fatal(err)
	}
	g1, err := st.Rotate(ctx, g.Token, redisstore.Client{})
	if err != nil {
		f.Fatal(err)
	}
	tok := g1.Token
	for _, s := range []string{"", tok, tok[:len(tok)-1], tok + "A", strings.ToUpper(tok), "sct_", "sct_" + strings.Repeat("A", 131),
		strings.Replace(tok, "A", "B", 1), tok[:40] + "\x00" + tok[41:], tok[:40] + "é" + tok[42:], "\u202e" + tok[1:], strings.Repeat("\xff", 135),
		g.Token[:4] + tok[4:70] + g.Token[70:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p := payloadOf(s); s == tok || s == g.Token || p != "" && (p == payloadOf(tok) || p == payloadOf(g.Token)) {
			return // the genuine tokens, however spelled (TestTokenCanonicalEncoding)
		}
		before := b.Snapshot(t)
		_, verr := st.Validate(ctx, s)
		_, rerr := st.Rotate(ctx, s, redisstore.Client{})
		n, xerr := st.RevokeToken(ctx, s)
		if xerr == nil && n == 0 {
			// A genuine token of a session this server does not hold (the
			// fuzzing workers each log in their own): nothing to revoke.
			xerr = redisstore.ErrUnknown
		}
		for _, err := range []error{verr, rerr, xerr} {
			if !errors.Is(err, redisstore.ErrMalformed) && !errors.Is(err, redisstore.ErrUnknown) {
				t.Fatalf("%q: %v", s, err)
			}
		}
		if d := cmp.Diff(before, b.Snapshot(t)); d != "" {
			t.Fatalf("%q changed the keyspace:\n%s", s, d)
		}
	})
}

// payloadOf decodes a token leniently, as the library does; "" if it cannot.
func payloadOf(tok string) string {
	p, ok := tokenlayout.Decode(tok, redisstore.DefaultTokenPrefix)
	if !ok {
		return ""
	}
	return string(p)
}

// TestTokenBitFlips flips every bit of a real token in turn: each variant
// must be refused without a Redis round trip that changes anything, and
// the real session must still be valid afterwards. A flip that only
// changes the unused low bits of the last base64 character spells the same
// token differently; TestTokenCanonicalEncoding covers those.
func TestTokenBitFlips(t *testing.T) {
	b := redistest.For(t, redistest.Mini)
	st := wrap(t, b.Client, redisstore.Options{KeyPrefix: b.Prefix})
	ctx := context.Background()
	g, err := st.Issue(ctx, "flip-user", redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	payload := payloadOf(g.Token)
	before := b.Snapshot(t)
	var n counter
	start := time.Now()
	for i := 0; i < len(g.Token); i++ {
		for bit := 0; bit < 8; bit++ {
			v := []byte(g.Token)
			v[i] ^= 1 << bit
			if payloadOf(string(v)) == payload {
				n.add("alias", 1)
				continue
			}
			_, err := st.Rotate(ctx, string(v), redisstore.Client{})
			n.add(errClass(err), 1)
			if !errors.Is(err, redisstore.ErrMalformed) && !errors.Is(err, redisstore.ErrUnknown) {
				t.Errorf("bit %d of byte %d: %v", bit, i, err)
			}
			_, err = st.RevokeToken(ctx, string(v))
			if !errors.Is(err, redisstore.ErrMalformed) && !errors.Is(err, redisstore.ErrUnknown) {
				t.Errorf("revoke, bit %d of byte %d: %v", bit, i, err)
			}
		}
	}
	if d := cmp.Diff(before, b.Snapshot(t)); d != "" {
		t.Errorf("flipped tokens changed the keyspace:\n%s", d)
	}
	if _, err := st.Validate(ctx, g.Token); err != nil {
		t.Errorf("the real token after the flips: %v", err)
	}
	figure(t, "token_bit_flips", "variants", 8*len(g.Token), "malformed", n.get("malformed"), "unknown", n.get("unknown"),
		"same_token_other_spelling", n.get("alias"), "took", ms(time.Since(start)))
}

// TestTokenCanonicalEncoding: a token is 98 bytes in 131 base64 characters,
// so the last character carries 2 unused bits. The three other spellings
// that differ only there must be refused, or one token has four strings:
// a deny list, a cache or a log search keyed by the string misses three.
func TestTokenCanonicalEncoding(t *testing.T) {
	b := redistest.For(t, redistest.Mini)
	st := wrap(t, b.Client, redisstore.Options{KeyPrefix: b.Prefix})
	ctx := context.Background()
	g, err := st.Issue(ctx, "canonical-user", redisstore.Client{})
	if err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, g.Token[len(g.Token)-1])
	accepted := 0
	for pad := 1; pad < 4; pad++ {
		alias := g.Token[:len(g.Token)-1] + string(alphabet[last^pad])
		if _, err := st.Validate(ctx, alias); err == nil {
			accepted++
		} else if !errors.Is(err, redisstore.ErrMalformed) {
			t.Errorf("alias %d: %v, want ErrMalformed", pad, err)
		}
	}
	figure(t, "token_canonical_encoding", "other_spellings", 3, "accepted", accepted)
	if accepted > 0 {
		t.Fatalf("%d other spellings of a token (unused bits of its last base64 character set) validate as the token itself", accepted)
	}
}
