package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/nodetest"
	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/internal/servicetest"
)

// oauth4webapiDir holds the Node.js client of TestOAuth4WebAPI: its
// package.json pins oauth4webapi, and refresh.mjs drives it.
const oauth4webapiDir = "testdata/oauth4webapi"

// o4wError is an error oauth4webapi raised, as refresh.mjs describes it.
type o4wError struct {
	Name             string `json:"name"`
	Code             string `json:"code"`
	Message          string `json:"message"`
	Status           int    `json:"status"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	Challenges       []struct {
		Scheme     string            `json:"scheme"`
		Parameters map[string]string `json:"parameters"`
	} `json:"challenges"`
}

func (e *o4wError) String() string {
	if e == nil {
		return "no error"
	}
	return fmt.Sprintf("%s %s (status %d, error %q: %q): %s", e.Name, e.Code, e.Status, e.Error, e.ErrorDescription, e.Message)
}

// o4wSession is what oauth4webapi saw of one session.
type o4wSession struct {
	ClientID string `json:"client_id"`
	Steps    []struct {
		Auth     string `json:"auth"`
		Response struct {
			Status       int    `json:"status"`
			ContentType  string `json:"content_type"`
			CacheControl string `json:"cache_control"`
			Pragma       string `json:"pragma"`
		} `json:"response"`
		TokenType          string            `json:"token_type"`
		ExpiresIn          int64             `json:"expires_in"`
		PresentedSHA256    string            `json:"presented_sha256"`
		RefreshTokenSHA256 string            `json:"refresh_token_sha256"`
		Header             map[string]string `json:"header"`
		Claims             map[string]any    `json:"claims"`
	} `json:"steps"`
	WrongSecret   map[string]*o4wError `json:"wrong_secret"`
	WrongAudience *o4wError            `json:"wrong_audience"`
	Replay        *o4wError            `json:"replay"`
	AfterReplay   *o4wError            `json:"after_replay"`
}

// o4wReport is refresh.mjs's output.
type o4wReport struct {
	OAuth4WebAPI string `json:"oauth4webapi"`
	Node         string `json:"node"`
	Discovery    struct {
		URL         string `json:"url"`
		Status      int    `json:"status"`
		ContentType string `json:"content_type"`
	} `json:"discovery"`
	Metadata map[string]any `json:"metadata"`
	Sessions []o4wSession   `json:"sessions"`
	Failure  *o4wError      `json:"failure"`
}

// TestOAuth4WebAPI proves the OAuth side of the real binary against an
// OAuth library nobody here wrote: panva's oauth4webapi, on Node.js, as a
// client and as a resource server. The service listens on a port of its
// own, with that URL as its issuer, and an audience for its access tokens.
// The test logs users in through the API; refresh.mjs then discovers the
// service from the issuer (RFC 8414), refreshes again and again at the
// token endpoint as a public client (no client authentication) and, with a
// file of clients, as a confidential one (client_secret_basic and
// client_secret_post, after a wrong secret is refused both ways), validates
// every access token as a resource server (RFC 9068, the keys at the
// discovered jwks_uri) and refuses it for another audience, replays an old
// refresh token and reports the library's invalid_grant, for it and then
// for the revoked session's current token. The test asserts on the report.
func TestOAuth4WebAPI(t *testing.T) {
	dir := nodetest.Install(t, oauth4webapiDir)
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if b, err := os.ReadFile(filepath.Join(oauth4webapiDir, "package.json")); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{"ES256", "EdDSA"} {
		for _, clients := range []string{"open", "file"} {
			t.Run("alg="+alg+"/clients="+clients, func(t *testing.T) {
				testOAuth4WebAPI(t, dir, pkg.Dependencies["oauth4webapi"], alg, clients == "file")
			})
		}
	}
}

func testOAuth4WebAPI(t *testing.T, dir, version, alg string, registered bool) {
	const (
		audience = "https://api.example.test"
		ttl      = 2 * time.Minute
		public   = "spa"
		private  = "backend"
	)
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	issuer := "http://" + addr
	key, secret := randomHex(16), randomHex(32)
	env := map[string]string{
		envListen:         addr,
		envIssuer:         issuer,
		envAPIKey:         key,
		envAccessTokenAlg: alg,
		envAccessTokenAud: audience,
		envAccessTokenTTL: ttl.String(),
	}
	if registered {
		file := filepath.Join(t.TempDir(), "clients")
		sum := sha256.Sum256([]byte(secret))
		text := public + " public\n" + private + " confidential sha256:" + hex.EncodeToString(sum[:]) + "\n"
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		env[envClientsFile] = file
	}
	cmd, logs := command(t, env)
	servicetest.Start(t, cmd, logs)
	poll(t, 10*time.Second, "/readyz 200", func() bool { return readyStatus(issuer) == http.StatusOK })

	api := newAPIClient(t, issuer, key)
	user := "auth0|" + uuid.NewString()
	type session struct {
		ClientID     string   `json:"client_id"`
		Secret       string   `json:"secret,omitempty"`
		RefreshToken string   `json:"refresh_token"`
		Steps        []string `json:"steps"`
		WrongSecret  bool     `json:"wrong_secret"`
		Replay       bool     `json:"replay"`
	}
	login := func(client string) (string, string) {
		g := api.must(http.StatusCreated, "POST", "/v1/sessions", `{"client_id":"`+client+`","user_id":"`+user+`","device_name":"`+client+`"}`)
		return g.str("refresh_token"), g.str("session_id")
	}
	var sessions []session
	sids := map[string]string{} // client id: session id
	tok, sid := login(public)
	sessions = append(sessions, session{ClientID: public, RefreshToken: tok, Steps: []string{"none", "none", "none", "none", "none"}, Replay: true})
	sids[public] = sid
	if registered {
		tok, sid := login(private)
		sessions = append(sessions, session{ClientID: private, Secret: secret, RefreshToken: tok, WrongSecret: true, Replay: true,
			Steps: []string{"client_secret_basic", "client_secret_post", "client_secret_basic", "client_secret_post"}})
		sids[private] = sid
	}

	jwks := api.send("GET", jwksPath, "", nil)
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(jwks.raw), &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("GET %s: %d %s: %v", jwksPath, jwks.status, jwks.raw, err)
	}
	published := map[string]bool{}
	for _, k := range set.Keys {
		published[k.Kid] = true
	}

	start := time.Now()
	var rep o4wReport
	nodetest.Run(t, dir, "refresh.mjs", map[string]any{"issuer": issuer, "audience": audience, "alg": alg, "sessions": sessions}, &rep)
	end := time.Now()
	if rep.Failure != nil {
		t.Fatalf("oauth4webapi %s on Node.js %s failed: %v", rep.OAuth4WebAPI, rep.Node, rep.Failure)
	}
	if rep.OAuth4WebAPI != version {
		t.Errorf("oauth4webapi %q ran, package.json pins %q", rep.OAuth4WebAPI, version)
	}

	if rep.Discovery.URL != issuer+metadataPath || rep.Discovery.Status != http.StatusOK || rep.Discovery.ContentType != mediaJSON {
		t.Errorf("discovery: %+v, want 200 %s from %s", rep.Discovery, mediaJSON, issuer+metadataPath)
	}
	for k, want := range map[string]any{
		"issuer":         issuer,
		"token_endpoint": issuer + tokenPath,
		"jwks_uri":       issuer + jwksPath,
		"access_token_signing_alg_values_supported": []any{alg},
		"token_endpoint_auth_methods_supported":     []any{"none", "client_secret_basic", "client_secret_post"},
	} {
		if diff := cmp.Diff(want, rep.Metadata[k]); diff != "" {
			t.Errorf("discovered %s (-want +got):\n%s", k, diff)
		}
	}

	if len(rep.Sessions) != len(sessions) {
		t.Fatalf("the report has %d sessions, want %d", len(rep.Sessions), len(sessions))
	}
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	seen := map[string]bool{} // refresh token hashes and jtis, across sessions
	for i, in := range sessions {
		got := rep.Sessions[i]
		if got.ClientID != in.ClientID || len(got.Steps) != len(in.Steps) {
			t.Fatalf("session %d: client %q with %d steps, want %q with %d", i, got.ClientID, len(got.Steps), in.ClientID, len(in.Steps))
		}
		presented := hash(in.RefreshToken)
		seen[presented] = true
		for j, st := range got.Steps {
			where := fmt.Sprintf("%s refresh %d (%s)", in.ClientID, j+1, st.Auth)
			if st.Auth != in.Steps[j] {
				t.Errorf("%s: ran %s", where, st.Auth)
			}
			if r := st.Response; r.Status != http.StatusOK || r.ContentType != mediaJSON || r.CacheControl != "no-store" || r.Pragma != "no-cache" {
				t.Errorf("%s: answer %+v, want 200 %s, Cache-Control no-store, Pragma no-cache", where, r, mediaJSON)
			}
			if st.TokenType != "bearer" || st.ExpiresIn != int64(ttl/time.Second) {
				t.Errorf("%s: token_type %q expires_in %d, want bearer %d", where, st.TokenType, st.ExpiresIn, int64(ttl/time.Second))
			}
			// The client presents the refresh token it got last, and gets a
			// new one each time.
			if st.PresentedSHA256 != presented {
				t.Errorf("%s: the client presented another refresh token than the last one it got", where)
			}
			if st.RefreshTokenSHA256 == "" || seen[st.RefreshTokenSHA256] {
				t.Errorf("%s: no refresh token, or one seen before", where)
			}
			seen[st.RefreshTokenSHA256], presented = true, st.RefreshTokenSHA256

			if st.Header["alg"] != alg || st.Header["typ"] != "at+jwt" || !published[st.Header["kid"]] {
				t.Errorf("%s: access token header %v, want alg %s, typ at+jwt and a published kid", where, st.Header, alg)
			}
			c := st.Claims
			for k, want := range map[string]any{"iss": issuer, "aud": audience, "sub": user, "sid": sids[in.ClientID], "client_id": in.ClientID} {
				if c[k] != want {
					t.Errorf("%s: claim %s %v, want %v", where, k, c[k], want)
				}
			}
			jti, _ := c["jti"].(string)
			if jti == "" || seen["jti "+jti] {
				t.Errorf("%s: jti %q: empty or seen before", where, jti)
			}
			seen["jti "+jti] = true
			iat, _ := c["iat"].(float64)
			exp, _ := c["exp"].(float64)
			if iat < float64(start.Unix()) || iat > float64(end.Unix()) || exp-iat != ttl.Seconds() {
				t.Errorf("%s: iat %v exp %v, want iat within the run (%d..%d) and exp %v later", where, iat, exp, start.Unix(), end.Unix(), ttl)
			}
		}

		if e := got.WrongAudience; e == nil || e.Name != "OperationProcessingError" || e.Code != "OAUTH_JWT_CLAIM_COMPARISON_FAILED" || !strings.Contains(e.Message, `"aud"`) {
			t.Errorf("%s: an access token validated for another audience: %v, want OperationProcessingError OAUTH_JWT_CLAIM_COMPARISON_FAILED on aud", in.ClientID, e)
		}
		if in.WrongSecret {
			// RFC 6749 section 5.2: 401 invalid_client, with a challenge
			// for a client that tried HTTP Basic.
			if e := got.WrongSecret["client_secret_basic"]; e == nil || e.Name != "WWWAuthenticateChallengeError" || e.Status != http.StatusUnauthorized ||
				len(e.Challenges) != 1 || e.Challenges[0].Scheme != "basic" {
				t.Errorf("%s: a wrong secret in HTTP Basic: %v, want a WWWAuthenticateChallengeError, 401, a Basic challenge", in.ClientID, e)
			}
			if e := got.WrongSecret["client_secret_post"]; e == nil || e.Name != "ResponseBodyError" || e.Status != http.StatusUnauthorized || e.Error != "invalid_client" {
				t.Errorf("%s: a wrong secret in the form: %v, want a ResponseBodyError, 401 invalid_client", in.ClientID, e)
			}
		}
		if in.Replay {
			for what, e := range map[string]*o4wError{"the replay of an old refresh token": got.Replay, "a refresh of the revoked session": got.AfterReplay} {
				if e == nil || e.Name != "ResponseBodyError" || e.Code != "OAUTH_RESPONSE_BODY_ERROR" || e.Status != http.StatusBadRequest ||
					e.Error != "invalid_grant" || e.ErrorDescription == "" {
					t.Errorf("%s: %s: %v, want a ResponseBodyError, 400 invalid_grant with a description", in.ClientID, what, e)
				}
			}
		}
	}
}
