package main

// DPoP (RFC 9449) end to end: a client whose proofs panva/dpop makes
// (testdata/dpop/flow.mjs) drives the service through the README's nginx
// configuration, on a real Redis.

import (
	"net/http"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/sessioncache/sessioncache/internal/nodetest"
	"github.com/sessioncache/sessioncache/internal/redistest"
)

// dpopFlowStep is one answer flow.mjs saw.
type dpopFlowStep struct {
	What            string `json:"what"`
	Status          int    `json:"status"`
	Error           string `json:"error"`
	Reason          string `json:"reason"`
	TokenType       string `json:"token_type"`
	WWWAuthenticate string `json:"www_authenticate"`
	Nonce           bool   `json:"nonce"`
}

// TestNginxDPoP: the client logs in bound to its key, refreshes through
// nginx three times (the first answered use_dpop_nonce, then with the
// nonce), reaches the application through nginx with its DPoP-bound access
// token, and every thief's move is refused: the same proof again, the
// access token as a bearer token, without a proof, with another key's
// proof, a proof for another path; the refresh token without a proof, with
// another key's proof, one proof twice. A replay of the first refresh
// token with the key is reuse, as ever.
func TestNginxDPoP(t *testing.T) {
	bin := nginxBinary(t)
	dir := nodetest.Install(t, "testdata/dpop")
	b := redistest.For(t, redistest.Real)
	key, secret := randomHex(16), randomHex(32)
	app := newApplication(t)
	// The issuer is nginx's address: proofs name the URIs the client
	// addresses, nginx's, and the service checks htu against its issuer.
	addr := freeAddr(t)
	base := "http://" + addr
	svc := startService(t, map[string]string{
		envRedisURL:        os.Getenv(redistest.EnvRedisURL),
		envKeyPrefix:       b.Prefix,
		envAPIKey:          key,
		envSecret:          secret,
		envIssuer:          base,
		envDPoPNoncePeriod: "1m",
	})
	api := newAPIClient(t, "http://"+svc.addr, key)
	poll(t, 10e9, "the service to be ready", func() bool { return api.send("GET", "/readyz", "", nil).status == http.StatusOK })
	ngxDir := t.TempDir()
	server := readmeBlock(t, "### nginx `auth_request`", "nginx")
	conf := nginxConf(ngxDir, substitute(t, server, map[string]replacement{
		"listen 80;":                        once("listen " + addr + ";"),
		"server 127.0.0.1:8080;":            once("server " + svc.addr + ";"),
		"proxy_pass http://127.0.0.1:3000;": once("proxy_pass " + app.URL + ";"),
		`"<SESSIONCACHE_API_KEY>"`:          once(`"` + key + `"`),
	}))
	if err := runNginx(t, bin, ngxDir, conf, addr); err != nil {
		t.Fatal(err)
	}

	var rep struct {
		DPoP    string         `json:"dpop"`
		JKT     string         `json:"jkt"`
		Steps   []dpopFlowStep `json:"steps"`
		Failure string         `json:"failure"`
	}
	nodetest.Run(t, dir, "flow.mjs", map[string]any{
		"base": base, "service": "http://" + svc.addr, "api_key": key, "user_id": "auth0|" + uuid.NewString(),
		"client_id": testClient, "alg": "ES256", "refreshes": 3, "path": "/app/orders?id=7",
	}, &rep)
	if rep.Failure != "" {
		t.Fatalf("flow.mjs failed: %s", rep.Failure)
	}
	if rep.DPoP != "2.1.2" || len(rep.JKT) != 43 {
		t.Errorf("dpop %q ran with jkt %q, want 2.1.2 and a thumbprint", rep.DPoP, rep.JKT)
	}
	// nginx answers a refusal of forward auth with a page of its own, and
	// the service's challenge: the client learns why from that.
	challenge := func(code, reason string) string {
		description := tokenDescriptions[reason]
		if code == "invalid_dpop_proof" {
			description = dpopDescriptions[reason]
		}
		return `DPoP error="` + code + `", error_description="` + description + `", algs="ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512"`
	}
	ok := func(what string) dpopFlowStep {
		return dpopFlowStep{What: what, Status: 200, TokenType: "DPoP", Nonce: true}
	}
	bad := func(what, code, reason string) dpopFlowStep {
		return dpopFlowStep{What: what, Status: 400, Error: code, Reason: reason, Nonce: true}
	}
	want := []dpopFlowStep{
		{What: "login", Status: 201, TokenType: "DPoP"},
		{What: "refresh 1", Status: 400, Error: "use_dpop_nonce", Nonce: true},
		ok("refresh 1 (again, with the nonce)"),
		ok("refresh 2"),
		ok("refresh 3"),
		{What: "the application, with the key", Status: 200},
		{What: "the same proof again", Status: 401, WWWAuthenticate: challenge("invalid_dpop_proof", "replayed")},
		{What: "the access token as a bearer token", Status: 401, WWWAuthenticate: challenge("invalid_token", "dpop_required")},
		{What: "the access token without a proof", Status: 401, WWWAuthenticate: challenge("invalid_dpop_proof", "missing")},
		{What: "the access token with another key's proof", Status: 401, WWWAuthenticate: challenge("invalid_dpop_proof", "key_binding")},
		{What: "a proof for another path", Status: 401, WWWAuthenticate: challenge("invalid_dpop_proof", "htu")},
		ok("a refresh with a proof"),
		bad("the same proof again, with the new refresh token", "invalid_dpop_proof", "replayed"),
		bad("the refresh token without a proof", "invalid_dpop_proof", "missing"),
		bad("the refresh token with another key's proof", "invalid_dpop_proof", "key_binding"),
		bad("the first refresh token, replayed with the key", "invalid_grant", "reused"),
	}
	if d := cmp.Diff(want, rep.Steps); d != "" {
		t.Errorf("what the client saw through nginx (-want +got):\n%s", d)
	}
	// The application got exactly the one request with a valid proof, with
	// the service's identity.
	if got := app.requests(); len(got) != 1 || got[0].Path != "/app/orders?id=7" || got[0].Header.Get("X-Auth-User-Id") == "" {
		t.Errorf("the application received %+v, want the one request with an identity", got)
	}
}
