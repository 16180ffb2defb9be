package main

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/accesstoken"
	"github.com/sessioncache/sessioncache/internal/redistest"
)

// An unmodified standard OAuth client, golang.org/x/oauth2, refreshes
// through /oauth2/token again and again (its access tokens live 5 s, less
// than the 10 s before expiry at which it refreshes, so every Token call
// refreshes); every access token it gets passes /v1/auth. When a thief
// replays one of its old refresh tokens, the replay is refused, and the
// client's next refresh fails with the standard invalid_grant error, which
// it reports as such.
func TestOAuth2ClientRefreshes(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b *redistest.Backend) {
		e := newTestEnvOn(t, b, func(s *envSetup) {
			a, err := accesstoken.New(accesstoken.Config{Secret: s.store.Secret, Issuer: testIssuer, Audience: testIssuer, TTL: 5 * time.Second, Now: b.Clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			s.server.tokens, s.server.issuer = a, testIssuer
		})
		g := e.login(alice, "laptop")
		cfg := &oauth2.Config{ClientID: testClient, Endpoint: oauth2.Endpoint{TokenURL: e.base + tokenPath}}
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.http)
		ts := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: g.str("refresh_token"), Expiry: time.Now().Add(-time.Minute)})

		var refresh []string
		seen := map[string]bool{}
		for i := range 25 {
			tok, err := ts.Token()
			if err != nil {
				t.Fatalf("refresh %d: %v", i, err)
			}
			if tok.Type() != "Bearer" || tok.RefreshToken == "" || seen[tok.RefreshToken] || seen[tok.AccessToken] {
				t.Fatalf("refresh %d: type %q, a refresh token seen before: %v", i, tok.Type(), seen[tok.RefreshToken])
			}
			if left := time.Until(tok.Expiry); left < 3*time.Second || left > 6*time.Second {
				t.Errorf("refresh %d: the token expires in %v, want about 5s", i, left)
			}
			seen[tok.RefreshToken], seen[tok.AccessToken] = true, true
			refresh = append(refresh, tok.RefreshToken)
			r := e.send("GET", "/v1/auth", "", bearer(tok.AccessToken))
			checkValid(t, "an access token of x/oauth2", r, g, tok.AccessToken)
		}

		// A thief replays an old refresh token: refused, the session ends.
		r := e.tokenForm(refreshForm(refresh[3], testClient), nil)
		if r.str("reason") != "reused" {
			t.Fatalf("the replay: %d %s, want invalid_grant reused", r.status, r.raw)
		}
		_, err := ts.Token()
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || re.Response.StatusCode != http.StatusBadRequest || re.ErrorDescription == "" {
			t.Fatalf("the client's refresh after the replay: %v, want a RetrieveError invalid_grant", err)
		}
	})
}
