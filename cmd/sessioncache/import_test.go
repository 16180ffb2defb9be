package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// The import subcommand and the service on what it imported, as an
// operator runs them (the real binary, a real Redis, the machine's
// PostgreSQL): sessioncache import with the service's own settings, run
// twice (0 new the second time); then the service converts a legacy token
// at the token endpoint and at /v1/tokens/rotate, answers a second tab with
// the same successor, detects the replay of an older row, refuses a revoked
// family's token, and revokes a session by its legacy token. Both log in
// to Redis as an ACL user with the rules file's rights and nothing more:
// Redis refuses neither anything (ACL LOG).
func TestImportCommand(t *testing.T) {
	b := redistest.For(t, redistest.Real)
	pgURL := os.Getenv("SESSIONCACHE_TEST_POSTGRES_URL")
	if pgURL == "" {
		pgURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgURL)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if os.Getenv(redistest.EnvRequireReal) == "1" {
			t.Fatalf("PostgreSQL unreachable: %v", err)
		}
		t.Skipf("PostgreSQL unreachable (set SESSIONCACHE_TEST_POSTGRES_URL): %v", err)
	}
	defer pool.Close()
	table := "sc_import_cmd_" + randomHex(6)
	if _, err := pool.Exec(ctx, `CREATE TABLE `+table+` (
	id bigserial PRIMARY KEY, user_id uuid NOT NULL, token_hash text NOT NULL UNIQUE, family_id uuid NOT NULL,
	expires_at timestamptz NOT NULL, is_revoked boolean NOT NULL DEFAULT false, revoked_at timestamptz,
	device_id text, device_name text, ip_address text, created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	defer pool.Exec(ctx, "DROP TABLE "+table)
	// Three families of alice: two live (rows: rotated, current), one revoked.
	var tokens [3][2]string
	fams := [3]uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for i, fam := range fams {
		for j := range 2 {
			tok := fmt.Sprintf("legacy-%d-%d-%s", i, j, randomHex(16))
			tokens[i][j] = tok
			h := sha256.Sum256([]byte(tok))
			revoked := j == 0 || i == 2
			if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (user_id, token_hash, family_id, expires_at, is_revoked, device_name, created_at)
VALUES ($1, $2, $3, now() + interval '7 days', $4, 'Firefox on Linux', now() - $5::interval)`,
				alice, hex.EncodeToString(h[:]), fam, revoked, fmt.Sprintf("%d minutes", 60-j*30)); err != nil {
				t.Fatal(err)
			}
		}
	}
	opt, err := redis.ParseURL(os.Getenv(redistest.EnvRedisURL))
	if err != nil {
		t.Fatal(err)
	}
	opt.Protocol = 2
	admin := redis.NewClient(opt)
	defer admin.Close()
	user, password := "sc-import-"+randomHex(6), randomHex(16)
	aclUser(t, []*redis.Client{admin}, user, password, aclRulesFor(t, b.Prefix))
	defer admin.Do(ctx, "ACL", "DELUSER", user)
	dir := t.TempDir()
	env := map[string]string{
		envRedisURL: os.Getenv(redistest.EnvRedisURL), envKeyPrefix: b.Prefix, envSecret: randomHex(32),
		envLegacyHash: "sha256", envAPIKey: randomHex(16),
		envRedisUsernameFile: writeFile(t, dir, "user", user), envRedisPasswordFile: writeFile(t, dir, "password", password),
	}
	importOnce := func() map[string]any {
		t.Helper()
		cmd, logs := command(t, env, "import", "-postgres", pgURL, "-table", table)
		if err := cmd.Run(); err != nil {
			t.Fatalf("sessioncache import: %v\n%s", err, logs)
		}
		for _, l := range logLines(logs.String()) {
			if l["msg"] == "import done" {
				return l
			}
		}
		t.Fatalf("no final count in the log:\n%s", logs)
		return nil
	}
	if done := importOnce(); done["new"] != 2.0 || done["skipped_revoked"] != 1.0 || done["legacy_tokens_until"] == nil {
		t.Fatalf("first import: %v, want 2 new, 1 revoked family skipped", done)
	}
	if done := importOnce(); done["new"] != 0.0 || done["unchanged"] != 2.0 {
		t.Fatalf("second import: %v, want 0 new", done)
	}

	p := startService(t, env)
	public := newAPIClient(t, "http://"+p.addr, "")
	r := public.tokenForm(refreshForm(tokens[0][1], "web-app"), nil)
	if r.status != http.StatusOK || !strings.HasPrefix(r.str("refresh_token"), "sct_") || r.str("access_token") == "" {
		t.Fatalf("legacy token at /oauth2/token: %d %s", r.status, r.raw)
	}
	if tab := public.tokenForm(refreshForm(tokens[0][1], "web-app"), nil); tab.str("refresh_token") != r.str("refresh_token") {
		t.Fatalf("second tab: %d %s, want the same successor", tab.status, tab.raw)
	}
	api := newAPIClient(t, "http://"+p.addr, env[envAPIKey])
	if g := api.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tokens[1][1])); g.str("session_id") != fams[1].String() || g.str("user_id") != alice {
		t.Fatalf("legacy token at /v1/tokens/rotate: %s", g.raw)
	}
	checkOAuthError(t, "an older row", api.do("POST", "/v1/tokens/rotate", refreshBody(tokens[1][0])), http.StatusBadRequest, "invalid_grant", "reused")
	checkOAuthError(t, "a revoked family", api.do("POST", "/v1/tokens/rotate", refreshBody(tokens[2][1])), http.StatusBadRequest, "invalid_grant", "unknown")
	if rv := api.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(tokens[0][0])); rv.body["revoked"] != 1.0 {
		t.Fatalf("revoking by a legacy token: %s", rv.raw)
	}
	checkOAuthError(t, "after the revocation", public.tokenForm(refreshForm(r.str("refresh_token"), "web-app"), nil), http.StatusBadRequest, "invalid_grant", "revoked")
	if l := api.must(http.StatusOK, "GET", "/v1/users/"+alice+"/sessions", ""); strings.Count(l.raw, `"session_id"`) != 0 {
		t.Errorf("sessions left after a replay and a revocation: %s", l.raw)
	}
	if logs := p.logs.String(); strings.Contains(logs, "legacy-") || strings.Contains(logs, "sct_") {
		t.Errorf("the log shows a token")
	}
	if d := aclDenials(t, []*redis.Client{admin}, user); len(d) > 0 {
		t.Errorf("Redis refused the import's or the service's user: %v", d)
	}
}

// The import refuses a configuration it cannot work with, naming what is
// missing, before it touches either database.
func TestImportRefused(t *testing.T) {
	base := map[string]string{envRedisURL: "redis://127.0.0.1:1", envSecret: randomHex(32), envLegacyHash: "sha256"}
	for _, tc := range []struct {
		name  string
		unset string
		set   map[string]string
		args  []string
		want  string
	}{
		{"no postgres", "", nil, []string{"-table", "t"}, "-postgres is required"},
		{"no table", "", nil, []string{"-postgres", "postgres://x"}, "-table is required"},
		{"no redis", envRedisURL, nil, nil, envRedisURL + " is required"},
		{"no secret", envSecret, nil, nil, envSecret},
		{"legacy off", envLegacyHash, nil, nil, envLegacyHash + " is off"},
		{"unknown hash", "", map[string]string{envLegacyHash: "md5"}, nil, "unknown token hash"},
		{"hmac without key", "", map[string]string{envLegacyHash: "hmac-sha256"}, nil, "needs its key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			delete(env, tc.unset)
			for k, v := range tc.set {
				env[k] = v
			}
			args := tc.args
			if args == nil {
				args = []string{"-postgres", "postgres://x", "-table", "t"}
			}
			var out strings.Builder
			code := run(append([]string{"import"}, args...), func(k string) string { return env[k] }, &out, nil)
			if code != exitConfig || !strings.Contains(out.String(), tc.want) {
				t.Errorf("exit %d, log %s; want %d and %q", code, out.String(), exitConfig, tc.want)
			}
		})
	}
}
