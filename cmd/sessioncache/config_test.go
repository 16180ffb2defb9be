package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/redisstore"
)

// envOf is an environment of the settings in m. Two settings that tests
// about other things would each have to repeat are filled in when m leaves
// them out: a service on a real Redis gets an API key (a key-less one
// serves only the embedded store), and every one an issuer (required beyond
// loopback). envOnly is m as it is.
func envOf(m map[string]string) func(string) string {
	full := map[string]string{}
	for k, v := range m {
		full[k] = v
	}
	_, keyed := m[envAPIKey]
	if m[envRedisURL] != "" && !keyed && m[envAPIKeyFile] == "" && m[envAPIKeysFile] == "" {
		full[envAPIKey] = goodKey
	}
	if _, ok := m[envIssuer]; !ok {
		full[envIssuer] = "https://sessioncache.test"
	}
	return envOnly(full)
}

func envOnly(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

const (
	goodKey    = "an-api-key-of-some-length"
	goodSecret = "a-secret-of-at-least-thirty-two-bytes!!"
)

func TestConfigDefaults(t *testing.T) {
	c, err := loadConfig(nil, envOnly(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.Listen, c.RedisURL, c.RedisMode, c.KeyPrefix, c.IdleTTL, c.AbsoluteTTL, c.Grace, c.MaxSessions, c.MaxInFlight, c.ShutdownDelay, c.APIKeys, c.Secret, c.LogLevel, c.AuthCookie, c.AccessLog}
	want := []any{"127.0.0.1:8080", "", "standalone", "sc:", 14 * 24 * time.Hour, 30 * 24 * time.Hour, redisstore.DefaultGrace, redisstore.DefaultMaxSessions, redisstore.DefaultMaxInFlight, 5 * time.Second, [][]byte(nil), []byte(nil), slog.LevelInfo, "sc_session", false}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
	if c.RedisOptions.standalone != nil || c.RedisOptions.cluster != nil || c.RedisOptions.sentinel != nil {
		t.Errorf("no URL must mean the embedded miniredis")
	}
	got = []any{c.Issuer, c.AccessTokenAud, c.AccessTokenTTL, c.AccessTokenAlg, c.AccessKeyPeriod, c.RefreshCookie, c.Clients.IsOpen(), c.Heartbeat}
	want = []any{"http://127.0.0.1:8080", "http://127.0.0.1:8080", 5 * time.Minute, "ES256", 24 * time.Hour, "", true, redisstore.DefaultHeartbeat}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("access token defaults (-want +got):\n%s", d)
	}
	// Every setting's default parses (the table is what -h prints).
	for _, s := range settings {
		if !strings.HasPrefix(s.env, "SESSIONCACHE_") || s.usage == "" {
			t.Errorf("setting %+v: want a SESSIONCACHE_ name and a usage", s)
		}
	}
}

func TestConfigFlagsWinOverEnvironment(t *testing.T) {
	env := map[string]string{envListen: "127.0.0.1:1", envIdleTTL: "1h", envAbsoluteTTL: "2h", envGrace: "0"}
	env[envAuthCookie] = "from_env"
	env[envAccessLog] = "true"
	c, err := loadConfig([]string{"-listen", "[::1]:2", "-idle-ttl=90m", "-grace-same-device", "-max-sessions", "5", "-auth-cookie", "__Host-session"}, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "[::1]:2" || c.IdleTTL != 90*time.Minute || c.AbsoluteTTL != 2*time.Hour || c.Grace != 0 || !c.GraceSameDevice || c.MaxSessions != 5 || c.AuthCookie != "__Host-session" || !c.AccessLog {
		t.Errorf("config = %+v", c)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"all interfaces without key", nil, map[string]string{envListen: "0.0.0.0:8080"}, "refusing to listen on 0.0.0.0:8080 without an API key"},
		{"empty host without key", nil, map[string]string{envListen: ":8080"}, "refusing to listen on :8080 without an API key"},
		{"ipv6 any without key", []string{"-listen", "[::]:8080"}, nil, "without an API key"},
		{"public address without key", nil, map[string]string{envListen: "192.0.2.1:8080"}, "Set SESSIONCACHE_API_KEY, SESSIONCACHE_API_KEY_FILE or SESSIONCACHE_API_KEYS_FILE"},
		{"listen not host:port", []string{"-listen", "8080"}, nil, `-listen="8080": want host:port`},
		{"listen bad port", nil, map[string]string{envListen: "127.0.0.1:http"}, "port"},
		{"metrics listen not host:port", []string{"-metrics-listen", "9090"}, nil, `-metrics-listen="9090": want host:port, such as 127.0.0.1:8080, or off`},
		{"metrics on the API's port", nil, map[string]string{envListen: "127.0.0.1:8080", envMetricsListen: "0.0.0.0:8080"}, `SESSIONCACHE_METRICS_LISTEN="0.0.0.0:8080": is the API's address (SESSIONCACHE_LISTEN): give /metrics a port of its own, or off`},
		{"short key", nil, map[string]string{envAPIKey: "short"}, "SESSIONCACHE_API_KEY: the API key is 5 bytes, at least 16"},
		{"short secret", nil, map[string]string{envSecret: "too-short-secret"}, "SESSIONCACHE_SECRET: the secret is 16 bytes; it must be at least 32 bytes"},
		{"secret twice", nil, map[string]string{envSecret: goodSecret, envSecretFile: "/x"}, "not both"},
		{"missing secret file", nil, map[string]string{envSecretFile: filepath.Join(dir, "nope")}, "no such file"},
		{"empty key file", nil, map[string]string{envAPIKeyFile: writeFile(t, dir, "empty", "\n")}, "the file is empty"},
		{"days", nil, map[string]string{envIdleTTL: "14d"}, `SESSIONCACHE_IDLE_TTL="14d": not a Go duration`},
		{"absolute < idle", []string{"-absolute-ttl", "1h"}, nil, `-absolute-ttl="1h": must be at least SESSIONCACHE_IDLE_TTL`},
		{"grace >= idle", nil, map[string]string{envIdleTTL: "1m", envAbsoluteTTL: "1h", envGrace: "1m"}, "SESSIONCACHE_GRACE"},
		{"negative grace", nil, map[string]string{envGrace: "-1s"}, `SESSIONCACHE_GRACE="-1s": must be from 0 (off) to 5m0s`},
		{"grace over MaxGrace", []string{"-grace", (redisstore.MaxGrace + time.Millisecond).String()}, nil, `-grace="5m0.001s": must be at most MaxGrace (5m0s)`},
		{"zero idle TTL", nil, map[string]string{envIdleTTL: "0s"}, `SESSIONCACHE_IDLE_TTL="0s": must be positive`},
		{"zero replication timeout", []string{"-replication-timeout", "0s"}, nil, `-replication-timeout="0s": must be positive`},
		{"negative replicas", nil, map[string]string{envRevocationReplicas: "-1"}, `SESSIONCACHE_REVOCATION_REPLICAS="-1": must not be negative`},
		{"wait under 1ms", nil, map[string]string{envReplicationTimeout: "10us"}, `SESSIONCACHE_REPLICATION_TIMEOUT="10us": must be at least 1ms`},
		{"brace in key prefix", nil, map[string]string{envKeyPrefix: "app{1}:"}, `SESSIONCACHE_KEY_PREFIX="app{1}:": must not contain '{' or '}'`},
		{"no session cap", nil, map[string]string{envMaxSessions: "0"}, `SESSIONCACHE_MAX_SESSIONS="0": must be at least 1`},
		{"negative session cap", nil, map[string]string{envMaxSessions: "-1"}, `SESSIONCACHE_MAX_SESSIONS="-1": must be at least 1`},
		{"max sessions text", []string{"-max-sessions", "ten"}, nil, `-max-sessions="ten": not an integer`},
		{"no requests in flight", nil, map[string]string{envMaxInFlight: "0"}, `SESSIONCACHE_MAX_IN_FLIGHT="0": must be at least 1, or off`},
		{"negative in flight", []string{"-max-in-flight", "-1"}, nil, `-max-in-flight="-1": must be at least 1, or off`},
		{"in flight text", nil, map[string]string{envMaxInFlight: "none"}, `SESSIONCACHE_MAX_IN_FLIGHT="none": not an integer or off`},
		{"in flight Off", nil, map[string]string{envMaxInFlight: "Off"}, `SESSIONCACHE_MAX_IN_FLIGHT="Off": not an integer or off`},
		{"bool", nil, map[string]string{envAllowEvicting: "yes please"}, "want true or false"},
		{"log level", nil, map[string]string{envLogLevel: "loud"}, "SESSIONCACHE_LOG_LEVEL"},
		{"cookie name with a space", nil, map[string]string{envAuthCookie: "sc session"}, `SESSIONCACHE_AUTH_COOKIE="sc session": not a cookie name`},
		{"cookie name with =", []string{"-auth-cookie", "a=b"}, nil, `-auth-cookie="a=b": not a cookie name`},
		{"shutdown timeout", nil, map[string]string{envShutdownTimeout: "0s"}, "SESSIONCACHE_SHUTDOWN_TIMEOUT"},
		{"cluster without URL", nil, map[string]string{envRedisMode: "cluster"}, "needs SESSIONCACHE_REDIS_URL"},
		{"unknown mode", nil, map[string]string{envRedisMode: "ring", envRedisURL: "redis://a:1"}, "want standalone, cluster or sentinel"},
		{"http URL", nil, map[string]string{envRedisURL: "http://a:1"}, "want a redis://, rediss:// or (standalone) unix:// URL"},
		{"two hosts standalone", nil, map[string]string{envRedisURL: "redis://a:1,b:2"}, "set SESSIONCACHE_REDIS_MODE=cluster or sentinel"},
		{"empty host in list", nil, map[string]string{envRedisMode: "cluster", envRedisURL: "redis://a:1,,b:2"}, "empty host"},
		{"sentinel without master", nil, map[string]string{envRedisMode: "sentinel", envRedisURL: "redis://a:26379"}, "SESSIONCACHE_REDIS_MASTER"},
		{"master without sentinel", nil, map[string]string{envRedisMaster: "m", envRedisURL: "redis://a:1"}, "not sentinel"},
		{"bad URL option", nil, map[string]string{envRedisURL: "redis://:hunter2hunter2@a:1/0?pool_size=lots"}, "pool_size"},
		{"real Redis without key", nil, map[string]string{envRedisURL: "redis://a:1", envAPIKey: ""}, "refusing to serve redis://a:1 without an API key: a key-less service is for the embedded development store only"},
		{"no issuer beyond loopback", nil, map[string]string{envListen: "0.0.0.0:8080", envAPIKey: goodKey, envIssuer: ""}, `SESSIONCACHE_ISSUER="": is required when listening on 0.0.0.0:8080`},
		{"issuer not a URL", nil, map[string]string{envIssuer: "sessioncache"}, "access tokens (SESSIONCACHE_ISSUER"},
		{"issuer with a query", nil, map[string]string{envIssuer: "https://a.example/?x=1"}, "has a query"},
		{"access token TTL", nil, map[string]string{envAccessTokenTTL: "2h"}, "out of range"},
		{"access token alg", []string{"-access-token-alg", "RS256"}, nil, `algorithm "RS256" is not supported`},
		{"key period", nil, map[string]string{envAccessKeyPeriod: "1h"}, "key period 1h0m0s is too short"},
		{"refresh cookie name", nil, map[string]string{envRefreshCookie: "a b"}, `SESSIONCACHE_REFRESH_COOKIE="a b": not a cookie name`},
		{"refresh cookie is the auth cookie", nil, map[string]string{envRefreshCookie: "sc_session"}, "must differ from SESSIONCACHE_AUTH_COOKIE"},
		{"heartbeat", nil, map[string]string{envHeartbeat: "1ms"}, "SESSIONCACHE_REVOCATION_HEARTBEAT"},
		{"auth memory", nil, map[string]string{envAuthMemory: "0"}, "SESSIONCACHE_AUTH_MEMORY_SESSIONS"},
		{"clients file", nil, map[string]string{envClientsFile: writeFile(t, dir, "clients", "web private\n")}, `line 1: client "web": type "private"`},
		{"arguments", []string{"serve"}, nil, "unexpected arguments"},
		{"unknown flag", []string{"-port", "1"}, nil, "flag provided but not defined: -port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, envOf(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			for _, secret := range []string{"hunter2", "too-short-secret", "short\""} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a secret", err)
				}
			}
		})
	}
}

// The configuration maps onto the library's options, which the library
// accepts: the service's grace 0 and max in flight off are the library's
// NoGrace and NoBatching (the library's 0 is its default), and the service
// always caps a user's sessions.
func TestConfigStoreOptions(t *testing.T) {
	cases := []struct {
		name        string
		env         map[string]string
		grace       time.Duration
		maxSessions int
		maxInFlight int
	}{
		{"defaults", nil, redisstore.DefaultGrace, redisstore.DefaultMaxSessions, redisstore.DefaultMaxInFlight},
		{"grace off", map[string]string{envGrace: "0"}, redisstore.NoGrace, redisstore.DefaultMaxSessions, redisstore.DefaultMaxInFlight},
		{"longest grace", map[string]string{envGrace: redisstore.MaxGrace.String()}, redisstore.MaxGrace, redisstore.DefaultMaxSessions, redisstore.DefaultMaxInFlight},
		{"one session", map[string]string{envMaxSessions: "1"}, redisstore.DefaultGrace, 1, redisstore.DefaultMaxInFlight},
		{"batching off", map[string]string{envMaxInFlight: "off"}, redisstore.DefaultGrace, redisstore.DefaultMaxSessions, redisstore.NoBatching},
		{"one in flight", map[string]string{envMaxInFlight: "1"}, redisstore.DefaultGrace, redisstore.DefaultMaxSessions, 1},
	}
	rdb := redis.NewClient(&redis.Options{}) // New does not contact it
	defer rdb.Close()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadConfig(nil, envOf(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			opt := c.storeOptions([]byte(goodSecret))
			if opt.Grace != tc.grace || opt.MaxSessions != tc.maxSessions || opt.MaxInFlight != tc.maxInFlight {
				t.Errorf("Grace %v, MaxSessions %d, MaxInFlight %d; want %v, %d, %d", opt.Grace, opt.MaxSessions, opt.MaxInFlight, tc.grace, tc.maxSessions, tc.maxInFlight)
			}
			if _, err := redisstore.New(rdb, opt); err != nil {
				t.Errorf("the library refuses the options: %v", err)
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		envListen:     "0.0.0.0:8080",
		envAPIKeyFile: writeFile(t, dir, "key", goodKey+"\n"),
	}
	c, err := loadConfig([]string{"-secret-file", writeFile(t, dir, "secret", goodSecret+"\r\n")}, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.APIKeys) != 1 || string(c.APIKeys[0]) != goodKey || string(c.Secret) != goodSecret {
		t.Errorf("keys %q secret %q: want them without the trailing newline", c.APIKeys, c.Secret)
	}
	if !strings.HasPrefix(c.APIKeyFrom, envAPIKeyFile) || !strings.HasPrefix(c.SecretFrom, "-secret-file") {
		t.Errorf("sources %q, %q", c.APIKeyFrom, c.SecretFrom)
	}
}

func TestConfigRedisModes(t *testing.T) {
	c, err := loadConfig(nil, envOf(map[string]string{envRedisMode: "cluster", envRedisURL: "redis://u:pw@a:1,b:2,c:3?dial_timeout=2s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := c.RedisOptions.cluster
	if o == nil || !cmp.Equal(o.Addrs, []string{"a:1", "b:2", "c:3"}) || o.Username != "u" || o.Password != "pw" || o.DialTimeout != 2*time.Second {
		t.Errorf("cluster options = %+v", o)
	}
	c, err = loadConfig([]string{"-redis-mode", "sentinel", "-redis-master", "mymaster"},
		envOf(map[string]string{envRedisURL: "redis://s1:26379,s2:26379/2?password=masterpw"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := c.RedisOptions.sentinel
	if f == nil || !cmp.Equal(f.SentinelAddrs, []string{"s1:26379", "s2:26379"}) || f.MasterName != "mymaster" || f.DB != 2 || f.Password != "masterpw" {
		t.Errorf("sentinel options = %+v", f)
	}
	c, err = loadConfig(nil, envOf(map[string]string{envRedisURL: "rediss://:pw@redis.example:6380/1"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s := c.RedisOptions.standalone; s == nil || s.Addr != "redis.example:6380" || s.DB != 1 || s.TLSConfig == nil {
		t.Errorf("standalone options = %+v", s)
	}
}

// The start-up log shows the effective configuration, never a secret.
func TestConfigLogHidesSecrets(t *testing.T) {
	env := map[string]string{
		envListen:   "0.0.0.0:8080",
		envAPIKey:   goodKey,
		envSecret:   goodSecret,
		envRedisURL: "redis://user:redispass1@redis:6379/0",
	}
	c, err := loadConfig(nil, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", c.logAttrs()...)
	out := buf.String()
	for _, secret := range []string{goodKey, goodSecret, "redispass1"} {
		if strings.Contains(out, secret) {
			t.Errorf("config log shows %q: %s", secret, out)
		}
	}
	for _, want := range []string{`"listen":"0.0.0.0:8080"`, `"redis":"redis://user:xxxxx@redis:6379/0"`, `"idle_ttl":"336h0m0s"`, `"api_key":"1 from SESSIONCACHE_API_KEY"`} {
		if !strings.Contains(out, want) {
			t.Errorf("config log lacks %s: %s", want, out)
		}
	}
}

// The process refuses to start unsafely, with exit code 2 and one JSON
// line that says why.
func TestRunRefusesUnsafeStart(t *testing.T) {
	var out bytes.Buffer
	code := run(nil, envOf(map[string]string{envListen: "0.0.0.0:0"}), &out, nil)
	if code != exitConfig || !strings.Contains(out.String(), `"level":"ERROR","msg":"refusing to start: refusing to listen on 0.0.0.0:0 without an API key`) {
		t.Errorf("exit %d, output %s", code, out.String())
	}
}

// -settings prints the table of settings as JSON, whatever the rest of
// the configuration says: the deployment tests (deploytest/) learn the
// variables they may use from it.
func TestSettingsFlag(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-settings"}, envOf(map[string]string{envListen: "0.0.0.0:0", envGrace: "soon"}), &out, nil); code != exitOK {
		t.Fatalf("-settings: exit %d, %s", code, out.String())
	}
	type entry struct {
		Env     string `json:"env"`
		Flag    string `json:"flag"`
		Default string `json:"default"`
		Secret  bool   `json:"secret"`
	}
	var got []entry
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("-settings printed %q: %v", out.String(), err)
	}
	var want []entry
	for _, s := range settings {
		want = append(want, entry{Env: s.env, Flag: s.flag, Default: s.def, Secret: s.flag == ""})
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("-settings (-want +got):\n%s", d)
	}
}

// The README's configuration table documents every setting, with its flag
// and its default.
func TestReadmeListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{} // variable -> flag, default
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(cells[1], " `SESSIONCACHE_") {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows[strings.Trim(cells[1], "`")] = cells[2:4]
	}
	for _, s := range settings {
		row, ok := rows[s.env]
		if !ok {
			t.Errorf("README.md does not document %s", s.env)
			continue
		}
		flag := "(environment only)"
		if s.flag != "" {
			flag = "`-" + s.flag + "`"
		}
		if row[0] != flag {
			t.Errorf("README.md: %s has flag %s, want %s", s.env, row[0], flag)
		}
		if s.def != "" && !strings.HasPrefix(row[1], "`"+s.def+"`") {
			t.Errorf("README.md: %s defaults to %s, want `%s`", s.env, row[1], s.def)
		}
		delete(rows, s.env)
	}
	for env := range rows {
		t.Errorf("README.md documents %s, which is no setting", env)
	}
}
