package main

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/accesstoken"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/clients"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/dpop"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/sqlimport"
	"github.com/sessioncache/sessioncache/redisstore"
)

// setting is one configuration value: an environment variable, usually a
// flag of the same meaning, and its default. The table below is the single
// source of the service's configuration; tests check that the README, the
// Kubernetes manifests and docker-compose.yml use only these names.
type setting struct {
	env   string
	flag  string // "" for values that must not appear in argv (secrets)
	def   string
	usage string
	bool  bool
}

const (
	envListen             = "SESSIONCACHE_LISTEN"
	envMetricsListen      = "SESSIONCACHE_METRICS_LISTEN"
	envRedisURL           = "SESSIONCACHE_REDIS_URL"
	envRedisMode          = "SESSIONCACHE_REDIS_MODE"
	envRedisMaster        = "SESSIONCACHE_REDIS_MASTER"
	envMoveFrom           = "SESSIONCACHE_MOVE_FROM_URL"
	envMoveFromMaster     = "SESSIONCACHE_MOVE_FROM_MASTER"
	envRedisTimeout       = "SESSIONCACHE_REDIS_TIMEOUT"
	envKeyPrefix          = "SESSIONCACHE_KEY_PREFIX"
	envIdleTTL            = "SESSIONCACHE_IDLE_TTL"
	envAbsoluteTTL        = "SESSIONCACHE_ABSOLUTE_TTL"
	envGrace              = "SESSIONCACHE_GRACE"
	envGraceSameDevice    = "SESSIONCACHE_GRACE_SAME_DEVICE"
	envMaxSessions        = "SESSIONCACHE_MAX_SESSIONS"
	envRevocationReplicas = "SESSIONCACHE_REVOCATION_REPLICAS"
	envReplicationTimeout = "SESSIONCACHE_REPLICATION_TIMEOUT"
	envMaxInFlight        = "SESSIONCACHE_MAX_IN_FLIGHT"
	envAPIKey             = "SESSIONCACHE_API_KEY"
	envAPIKeyFile         = "SESSIONCACHE_API_KEY_FILE"
	envSecret             = "SESSIONCACHE_SECRET"
	envSecretFile         = "SESSIONCACHE_SECRET_FILE"
	envAllowEvicting      = "SESSIONCACHE_ALLOW_EVICTING_POLICY"
	envShutdownDelay      = "SESSIONCACHE_SHUTDOWN_DELAY"
	envShutdownTimeout    = "SESSIONCACHE_SHUTDOWN_TIMEOUT"
	envLogLevel           = "SESSIONCACHE_LOG_LEVEL"
	envAuthCookie         = "SESSIONCACHE_AUTH_COOKIE"
	envAccessLog          = "SESSIONCACHE_ACCESS_LOG"
	envIssuer             = "SESSIONCACHE_ISSUER"
	envAccessTokenTTL     = "SESSIONCACHE_ACCESS_TOKEN_TTL"
	envAccessTokenAud     = "SESSIONCACHE_ACCESS_TOKEN_AUDIENCE"
	envAccessTokenAlg     = "SESSIONCACHE_ACCESS_TOKEN_ALG"
	envAccessKeyPeriod    = "SESSIONCACHE_ACCESS_KEY_PERIOD"
	envRefreshCookie      = "SESSIONCACHE_REFRESH_COOKIE"
	envAuthMemory         = "SESSIONCACHE_AUTH_MEMORY_SESSIONS"
	envHeartbeat          = "SESSIONCACHE_REVOCATION_HEARTBEAT"
	envDPoPNoncePeriod    = "SESSIONCACHE_DPOP_NONCE_PERIOD"
	envLegacyHash         = "SESSIONCACHE_LEGACY_HASH"
	envLegacyHashKeyFile  = "SESSIONCACHE_LEGACY_HASH_KEY_FILE"

	envSigningKeysFile   = "SESSIONCACHE_SIGNING_KEYS_FILE"
	envAPIKeysFile       = "SESSIONCACHE_API_KEYS_FILE"
	envClientsFile       = "SESSIONCACHE_CLIENTS_FILE"
	envTLSCertFile       = "SESSIONCACHE_TLS_CERT_FILE"
	envTLSKeyFile        = "SESSIONCACHE_TLS_KEY_FILE"
	envRedisCAFile       = "SESSIONCACHE_REDIS_TLS_CA_FILE"
	envRedisCertFile     = "SESSIONCACHE_REDIS_TLS_CERT_FILE"
	envRedisKeyFile      = "SESSIONCACHE_REDIS_TLS_KEY_FILE"
	envRedisInsecure     = "SESSIONCACHE_REDIS_TLS_INSECURE_SKIP_VERIFY"
	envRedisUsernameFile = "SESSIONCACHE_REDIS_USERNAME_FILE"
	envRedisPasswordFile = "SESSIONCACHE_REDIS_PASSWORD_FILE"
)

var settings = []setting{
	{env: envListen, flag: "listen", def: "127.0.0.1:8080", usage: "address to serve the API on"},
	{env: envMetricsListen, flag: "metrics-listen", def: "127.0.0.1:9090", usage: "address to serve /metrics and /openapi.yaml on, plain HTTP without a key, apart from the API (whose address does not serve them); off: not served"},
	{env: envRedisURL, flag: "redis-url", usage: "redis:// or rediss:// URL; cluster and sentinel take comma-separated host:port lists; unset: an embedded in-process miniredis"},
	{env: envRedisMode, flag: "redis-mode", def: "standalone", usage: "standalone, cluster or sentinel"},
	{env: envRedisMaster, flag: "redis-master", usage: "sentinel master name (sentinel mode only)"},
	{env: envMoveFrom, flag: "move-from-url", usage: "while moving onto the Redis the service runs on: redis:// URL of the Redis the data moves from (a single Redis, or sentinels comma-separated with " + envMoveFromMaster + "); every call moves its user first; unset: no move"},
	{env: envMoveFromMaster, flag: "move-from-master", usage: "sentinel master name of the Redis the data moves from"},
	{env: envRedisTimeout, flag: "redis-timeout", def: "2s", usage: "how long a request may wait for Redis before it is answered 503"},
	{env: envKeyPrefix, flag: "key-prefix", def: redisstore.DefaultKeyPrefix, usage: "prefix of every Redis key the service writes"},
	{env: envIdleTTL, flag: "idle-ttl", def: durationText(redisstore.DefaultIdleTTL), usage: "idle lifetime of a token; each rotation starts it again"},
	{env: envAbsoluteTTL, flag: "absolute-ttl", def: durationText(redisstore.DefaultAbsoluteTTL), usage: "absolute lifetime of a session, from its login"},
	{env: envGrace, flag: "grace", def: durationText(redisstore.DefaultGrace), usage: "how long a rotated token may be presented again for the same successor, at most " + redisstore.MaxGrace.String() + "; 0 turns grace off"},
	{env: envGraceSameDevice, flag: "grace-same-device", def: "false", usage: "honour grace only for the session's device id", bool: true},
	{env: envMaxSessions, flag: "max-sessions", def: strconv.Itoa(redisstore.DefaultMaxSessions), usage: "live sessions per user, at least 1; a login at the cap revokes the least recently used"},
	{env: envRevocationReplicas, flag: "revocation-replicas", def: "0", usage: "replicas that must acknowledge each revocation (Redis WAIT) before it is reported done; 0 does not wait"},
	{env: envReplicationTimeout, flag: "replication-timeout", def: durationText(redisstore.DefaultReplicationTimeout), usage: "how long a revocation waits for those replicas"},
	{env: envMaxInFlight, flag: "max-in-flight", def: strconv.Itoa(redisstore.DefaultMaxInFlight), usage: "Redis requests each instance keeps in flight to one Redis node before further calls wait and share one pipelined request (batching), at least 1; off sends every call as a request of its own"},
	{env: envAPIKey, usage: "bearer key required on /v1/* (environment only)"},
	{env: envAPIKeyFile, flag: "api-key-file", usage: "file holding the bearer key required on /v1/*"},
	{env: envSecret, usage: "secret of at least 32 bytes that signs tokens (environment only)"},
	{env: envSecretFile, flag: "secret-file", usage: "file holding the secret that signs tokens"},
	{env: envAllowEvicting, flag: "allow-evicting-policy", def: "false", usage: "become ready, and write, even if Redis may evict keys (unsafe)", bool: true},
	{env: envShutdownDelay, flag: "shutdown-delay", def: "5s", usage: "after SIGTERM, how long /readyz fails before the listener closes"},
	{env: envShutdownTimeout, flag: "shutdown-timeout", def: "20s", usage: "after the delay, how long in-flight requests may take"},
	{env: envLogLevel, flag: "log-level", def: "info", usage: "debug, info, warn or error"},
	{env: envAuthCookie, flag: "auth-cookie", def: defaultAuthCookie, usage: "cookie that /v1/auth reads a token from when the request has no Authorization: Bearer header"},
	{env: envAccessLog, flag: "access-log", def: "false", usage: "log one line per request; off, only failures, refused API keys and security events are logged", bool: true},
	{env: envIssuer, flag: "issuer", usage: "the service's URL as clients reach it (https://auth.example.com): iss of access tokens and of /.well-known/oauth-authorization-server; required unless listening on a loopback address (then http://<listen>)"},
	{env: envAccessTokenTTL, flag: "access-token-ttl", def: "5m", usage: "lifetime of an access token, at most 1h; never past its session's deadlines"},
	{env: envAccessTokenAud, flag: "access-token-audience", usage: "aud of access tokens, the value gateways check (default: the issuer)"},
	{env: envAccessTokenAlg, flag: "access-token-alg", def: "ES256", usage: "signature algorithm of access tokens: ES256 or EdDSA"},
	{env: envAccessKeyPeriod, flag: "access-key-period", def: "24h", usage: "how long each access-token signing key signs; keys derive from the secret, are published a period ahead and kept a period after"},
	{env: envRefreshCookie, flag: "refresh-cookie", usage: "cookie that /oauth2/token reads a refresh token from (when the form has none) and sets the new one in, HttpOnly, Secure, SameSite=Strict, Path=/oauth2/token; unset: tokens travel in the body only"},
	{env: envAuthMemory, flag: "auth-memory-sessions", def: "100000", usage: "sessions (and as many access tokens) each instance remembers for /v1/auth, about 0.4 KB each; past it, new ones are checked in Redis"},
	{env: envHeartbeat, flag: "revocation-heartbeat", def: durationText(redisstore.DefaultHeartbeat), usage: "how often the revocation feed proves it is whole; memory answers /v1/auth for 4 heartbeats after the last proof"},
	{env: envDPoPNoncePeriod, flag: "dpop-nonce-period", def: "0", usage: "how often the DPoP server nonce (RFC 9449 section 8) that /oauth2/token requires in proofs changes, at least 1s; 0: no nonces"},
	{env: envLegacyHash, flag: "legacy-hash", def: sqlimport.HashOff, usage: "accept the refresh tokens of a SQL table imported with sessioncache import, hashed as that table holds them: " + strings.Join(sqlimport.Hashes[1:], ", ") + "; off refuses them (see the README, Migrating from a SQL table)"},
	{env: envLegacyHashKeyFile, flag: "legacy-hash-key-file", usage: "file holding the key of " + envLegacyHash + "=" + sqlimport.HashHMACSHA256 + " (the old system's pepper)"},
	{env: envSigningKeysFile, flag: "signing-keys-file", usage: "file of keys that sign tokens, one \"<id> <base64 secret>\" a line, the first signs, all verify; re-read when it changes and on SIGHUP (needs " + envSecret + " or " + envSecretFile + ")"},
	{env: envAPIKeysFile, flag: "api-keys-file", usage: "file of API keys, one a line, any of which is accepted on /v1/*; re-read when it changes and on SIGHUP"},
	{env: envClientsFile, flag: "clients-file", usage: "file of OAuth clients, one \"<id> public\" or \"<id> confidential sha256:<hex of the secret's SHA-256>\" a line; re-read when it changes and on SIGHUP; unset: every client id is a public client"},
	{env: envTLSCertFile, flag: "tls-cert-file", usage: "serve HTTPS with this certificate chain (PEM); reloaded when it changes"},
	{env: envTLSKeyFile, flag: "tls-key-file", usage: "private key (PEM) of " + envTLSCertFile},
	{env: envRedisCAFile, flag: "redis-tls-ca-file", usage: "CA certificates (PEM) that Redis's certificate must chain to, for rediss:// URLs; unset: the system's"},
	{env: envRedisCertFile, flag: "redis-tls-cert-file", usage: "client certificate (PEM) to present to Redis; reloaded when it changes"},
	{env: envRedisKeyFile, flag: "redis-tls-key-file", usage: "private key (PEM) of " + envRedisCertFile},
	{env: envRedisInsecure, flag: "redis-tls-insecure-skip-verify", def: "false", usage: "do not verify Redis's certificate (unsafe; needed for skip_verify in the URL)", bool: true},
	{env: envRedisUsernameFile, flag: "redis-username-file", usage: "file holding the Redis ACL user name (the master's, in sentinel mode)"},
	{env: envRedisPasswordFile, flag: "redis-password-file", usage: "file holding the Redis password (the master's, in sentinel mode)"},
}

// errShowVersion is loadConfig's answer to -version.
var errShowVersion = errors.New("-version")

// errShowSettings is loadConfig's answer to -settings.
var errShowSettings = errors.New("-settings")

// Redis deployment modes.
const (
	modeStandalone = "standalone"
	modeCluster    = "cluster"
	modeSentinel   = "sentinel"
)

// minAPIKeyLen is the shortest API key accepted. (The shortest secret is
// the library's, redisstore.MinSecretLen.)
const minAPIKeyLen = 16

type config struct {
	Listen             string
	MetricsListen      string // "": off
	RedisURL           string // "" for the embedded miniredis
	RedisMode          string
	RedisMaster        string
	MoveFromURL        string       // "": no move
	MoveFrom           redisOptions // of MoveFromURL
	RedisTimeout       time.Duration
	KeyPrefix          string
	IdleTTL            time.Duration
	AbsoluteTTL        time.Duration
	Grace              time.Duration // 0: grace off (redisstore.NoGrace)
	GraceSameDevice    bool
	MaxSessions        int
	RevocationReplicas int
	ReplicationTimeout time.Duration
	MaxInFlight        int // 0: batching off (redisstore.NoBatching)
	AllowEvicting      bool
	ShutdownDelay      time.Duration
	ShutdownTimeout    time.Duration
	LogLevel           slog.Level
	AuthCookie         string
	AccessLog          bool
	Issuer             string
	AccessTokenTTL     time.Duration
	AccessTokenAud     string
	AccessTokenAlg     string
	AccessKeyPeriod    time.Duration
	RefreshCookie      string
	AuthMemory         int
	Heartbeat          time.Duration
	DPoPNoncePeriod    time.Duration
	LegacyHash         string
	// legacyHash is the legacy token hash LegacyHash names (with its key);
	// nil when LegacyHash is off.
	legacyHash func(string) []byte

	// issuerFromListen: Issuer was derived from the listen address;
	// audienceFromIssuer: AccessTokenAud is the issuer.
	issuerFromListen, audienceFromIssuer bool

	ClientsFile  string // "": every client id is public
	Clients      *clients.Registry
	clientsState fileState

	APIKeys      [][]byte // nil: no key, loopback only
	APIKeyFrom   string   // where the keys came from, for the start-up log
	APIKeysFile  string   // the file re-read when it changes and on SIGHUP; "" for the environment
	apiKeysRead  func(string) ([][]byte, error)
	Secret       []byte
	SecretFrom   string // "" when generated
	RedisOptions redisOptions

	SigningKeysFile string           // "": Secret signs, as key 0
	SigningKeys     []redisstore.Key // from SigningKeysFile
	TLSCertFile     string           // "": plain HTTP
	TLSKeyFile      string
	RedisTLS        redisTLS

	// The key files as they were when read, to tell when they change.
	signingKeysState, apiKeysState fileState

	// Check, if set, makes the process probe this path of the running
	// service and exit (a container health check without curl).
	Check string

	// subcommand: the configuration of a subcommand, which does not serve.
	subcommand bool
}

// subcommand is what a subcommand of the binary (sessioncache import) adds
// to loadConfig: its name and flags of its own. It takes the service's
// settings (Redis, the secret, the store's options) and none of the checks
// that only serving needs (the listen address, API keys, the issuer).
type subcommand struct {
	name  string
	flags func(*flag.FlagSet)
}

// loadConfig reads the configuration from flags (which win) and the
// environment, and validates it. Errors name the variable or flag at fault.
// With a subcommand, its flags are parsed too.
func loadConfig(args []string, getenv func(string) string, usageOut io.Writer, sub ...subcommand) (*config, error) {
	raw := map[string]string{}
	from := map[string]string{}
	for _, s := range settings {
		raw[s.env] = s.def
		if v := getenv(s.env); v != "" {
			raw[s.env], from[s.env] = v, s.env
		}
	}
	name := "sessioncache"
	for _, sc := range sub {
		name += " " + sc.name
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(usageOut)
	for _, sc := range sub {
		sc.flags(fs)
	}
	for _, s := range settings {
		if s.flag == "" {
			continue
		}
		set := func(v string) error {
			raw[s.env], from[s.env] = v, "-"+s.flag
			return nil
		}
		usage := fmt.Sprintf("%s (env %s", s.usage, s.env)
		if s.def != "" {
			usage += ", default " + s.def
		}
		usage += ")"
		if s.bool {
			fs.BoolFunc(s.flag, usage, set)
		} else {
			fs.Func(s.flag, usage, set)
		}
	}
	check := fs.String("check", "", "probe `path` (such as /readyz) of the service this configuration describes, and exit 0 if it answers 200")
	showVersion := fs.Bool("version", false, "print the version and exit")
	showSettings := fs.Bool("settings", false, "print every setting (variable, flag, default, whether it is a secret) as JSON and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *showVersion {
		return nil, errShowVersion
	}
	if *showSettings {
		return nil, errShowSettings
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: every setting is a flag or an environment variable", fs.Args())
	}
	p := parser{raw: raw, from: from}
	c := &config{
		Listen:             p.str(envListen),
		MetricsListen:      p.str(envMetricsListen),
		RedisURL:           p.str(envRedisURL),
		RedisMode:          p.str(envRedisMode),
		RedisMaster:        p.str(envRedisMaster),
		MoveFromURL:        p.str(envMoveFrom),
		RedisTimeout:       p.duration(envRedisTimeout),
		KeyPrefix:          p.str(envKeyPrefix),
		IdleTTL:            p.duration(envIdleTTL),
		AbsoluteTTL:        p.duration(envAbsoluteTTL),
		Grace:              p.duration(envGrace),
		GraceSameDevice:    p.boolean(envGraceSameDevice),
		MaxSessions:        p.integer(envMaxSessions),
		MaxInFlight:        p.integerOrOff(envMaxInFlight),
		RevocationReplicas: p.integer(envRevocationReplicas),
		ReplicationTimeout: p.duration(envReplicationTimeout),
		AllowEvicting:      p.boolean(envAllowEvicting),
		ShutdownDelay:      p.duration(envShutdownDelay),
		ShutdownTimeout:    p.duration(envShutdownTimeout),
		AuthCookie:         p.str(envAuthCookie),
		AccessLog:          p.boolean(envAccessLog),
		Issuer:             p.str(envIssuer),
		AccessTokenTTL:     p.duration(envAccessTokenTTL),
		AccessTokenAud:     p.str(envAccessTokenAud),
		AccessTokenAlg:     p.str(envAccessTokenAlg),
		AccessKeyPeriod:    p.duration(envAccessKeyPeriod),
		RefreshCookie:      p.str(envRefreshCookie),
		AuthMemory:         p.integer(envAuthMemory),
		Heartbeat:          p.duration(envHeartbeat),
		DPoPNoncePeriod:    p.duration(envDPoPNoncePeriod),
		LegacyHash:         p.str(envLegacyHash),
		ClientsFile:        p.str(envClientsFile),
		Check:              *check,
		subcommand:         len(sub) > 0,
	}
	if err := c.LogLevel.UnmarshalText([]byte(p.str(envLogLevel))); err != nil {
		p.fail(envLogLevel, "want debug, info, warn or error")
	}
	c.loadAPIKeys(&p)
	c.Secret, c.SecretFrom = p.secret(envSecret, envSecretFile)
	c.SigningKeysFile = p.str(envSigningKeysFile)
	if c.SigningKeysFile != "" {
		c.signingKeysState = statFile(c.SigningKeysFile)
		keys, err := readSigningKeys(c.SigningKeysFile)
		if err != nil {
			p.failAt(p.source(envSigningKeysFile), err.Error())
		}
		c.SigningKeys = keys
	}
	var legacyKey []byte
	if file := p.str(envLegacyHashKeyFile); file != "" {
		var err error
		if legacyKey, err = os.ReadFile(file); err != nil {
			p.failAt(p.source(envLegacyHashKeyFile), err.Error())
		} else if legacyKey = []byte(strings.TrimRight(string(legacyKey), "\r\n")); len(legacyKey) == 0 {
			p.failAt(p.source(envLegacyHashKeyFile), "the file is empty")
		}
	}
	if h, err := sqlimport.HashFunc(c.LegacyHash, legacyKey); err != nil {
		p.fail(envLegacyHash, err.Error())
	} else {
		c.legacyHash = h
	}
	c.Clients = clients.Open()
	if c.ClientsFile != "" {
		c.clientsState = statFile(c.ClientsFile)
		reg, err := readClients(c.ClientsFile)
		if err != nil {
			p.failAt(p.source(envClientsFile), err.Error())
		}
		c.Clients = reg
	}
	c.TLSCertFile, c.TLSKeyFile = p.str(envTLSCertFile), p.str(envTLSKeyFile)
	c.RedisTLS = redisTLS{
		fromFlag:     p.from[envRedisURL] == "-redis-url",
		caFile:       p.str(envRedisCAFile),
		certFile:     p.str(envRedisCertFile),
		keyFile:      p.str(envRedisKeyFile),
		insecure:     p.boolean(envRedisInsecure),
		usernameFile: p.str(envRedisUsernameFile),
		passwordFile: p.str(envRedisPasswordFile),
	}
	if p.err != nil {
		return nil, p.err
	}
	if err := c.validate(&p); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *config) validate(p *parser) error {
	// What only the service decides: 0 turns grace off (the library's 0 is
	// its default), and users are always capped (no NoSessionCap).
	if c.Grace < 0 {
		p.fail(envGrace, "must be from 0 (off) to "+redisstore.MaxGrace.String())
	}
	if c.MaxSessions < 1 {
		p.fail(envMaxSessions, "must be at least 1")
	}
	// The library reads a zero duration as its default; here every default
	// is written out, so a zero (or negative) one is a mistake.
	for _, d := range []struct {
		env string
		v   time.Duration
	}{{envIdleTTL, c.IdleTTL}, {envAbsoluteTTL, c.AbsoluteTTL}, {envReplicationTimeout, c.ReplicationTimeout}} {
		if d.v <= 0 {
			p.fail(d.env, "must be positive")
		}
	}
	// The rest of the store's options are the library's to judge.
	if p.err == nil {
		secret := c.Secret
		if secret == nil {
			secret = make([]byte, redisstore.MinSecretLen) // a random one is generated
		}
		var oe *redisstore.OptionError
		if err := c.storeOptions(secret).Validate(); errors.As(err, &oe) {
			// The reason may name other options: say their settings.
			reason := oe.Reason
			for option, env := range optionSettings {
				reason = strings.ReplaceAll(reason, " "+option+" (", " "+env+" (")
			}
			switch env, ok := optionSettings[oe.Option]; {
			case ok:
				p.fail(env, reason)
			case oe.Option == "Secret":
				p.failAt(c.SecretFrom, "the secret is "+oe.Value+"; it "+reason+" (for example: openssl rand -hex 32)")
			default:
				return err
			}
		} else if err != nil {
			return err
		}
	}
	if c.RedisTimeout < time.Millisecond {
		p.fail(envRedisTimeout, "must be at least 1ms")
	}
	if c.ShutdownDelay < 0 {
		p.fail(envShutdownDelay, "must be at least 0")
	}
	if c.ShutdownTimeout <= 0 {
		p.fail(envShutdownTimeout, "must be positive")
	}
	if err := (&http.Cookie{Name: c.AuthCookie, Value: "v"}).Valid(); err != nil {
		p.fail(envAuthCookie, "not a cookie name (letters, digits and !#$%&'*+-.^_`|~)")
	}
	if c.RefreshCookie != "" {
		if err := (&http.Cookie{Name: c.RefreshCookie, Value: "v"}).Valid(); err != nil {
			p.fail(envRefreshCookie, "not a cookie name (letters, digits and !#$%&'*+-.^_`|~)")
		} else if c.RefreshCookie == c.AuthCookie {
			p.fail(envRefreshCookie, "must differ from "+envAuthCookie+": the refresh token never travels where the access token does")
		}
	}
	if c.AuthMemory < 1 {
		p.fail(envAuthMemory, "must be at least 1")
	}
	if c.Heartbeat < 10*time.Millisecond || c.Heartbeat > 10*time.Second {
		p.fail(envHeartbeat, "must be from 10ms to 10s")
	}
	if c.DPoPNoncePeriod != 0 && (c.DPoPNoncePeriod < dpop.MinNoncePeriod || c.DPoPNoncePeriod > 24*time.Hour) {
		p.fail(envDPoPNoncePeriod, "must be 0 (no nonces) or from 1s to 24h")
	}
	if c.APIKeysFile == "" && len(c.APIKeys) == 1 && len(c.APIKeys[0]) < minAPIKeyLen {
		p.failAt(c.APIKeyFrom, fmt.Sprintf("the API key is %d bytes, at least %d required", len(c.APIKeys[0]), minAPIKeyLen))
	}
	if c.SigningKeysFile != "" && c.Secret == nil {
		// A random root secret would move every user's keys at each start.
		p.failAt(p.source(envSigningKeysFile), "needs "+envSecret+" or "+envSecretFile+": the secret that places users' keys and hashes stored tokens must stay the same for the life of the data")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		p.failAt(envTLSCertFile, "set both "+envTLSCertFile+" and "+envTLSKeyFile+", or neither")
	} else if c.TLSCertFile != "" {
		if _, err := newCertReloader("HTTPS certificate", c.TLSCertFile, c.TLSKeyFile); err != nil {
			p.failAt(envTLSCertFile, err.Error())
		}
	}
	opts, err := parseRedis(c.RedisMode, c.RedisURL, c.RedisMaster)
	if err != nil {
		src := p.from[envRedisURL]
		if src == "" {
			src = envRedisURL
		}
		p.failAt(fmt.Sprintf("%s=%q", src, redactURL(c.RedisURL)), err.Error())
	}
	if err == nil {
		if err := c.RedisTLS.apply(c.RedisURL, &opts); err != nil && p.err == nil {
			// The error names the settings at fault.
			p.err = err
		}
	}
	c.RedisOptions = opts
	if master := p.str(envMoveFromMaster); c.MoveFromURL != "" || master != "" {
		mode := modeStandalone
		if master != "" {
			mode = modeSentinel
		}
		switch from, err := parseRedis(mode, c.MoveFromURL, master); {
		case c.MoveFromURL == "":
			p.failAt(envMoveFromMaster, "needs "+envMoveFrom)
		case c.RedisURL == "":
			p.failAt(envMoveFrom, "needs "+envRedisURL+": the Redis the data moves to")
		case err != nil:
			p.failAt(fmt.Sprintf("%s=%q", envMoveFrom, redactURL(c.MoveFromURL)), err.Error())
		default:
			c.MoveFrom = from
		}
	}
	if p.err != nil || c.subcommand {
		return p.err
	}
	loopback, err := isLoopback(c.Listen)
	if err != nil {
		p.fail(envListen, err.Error())
		return p.err
	}
	if c.MetricsListen == "off" {
		c.MetricsListen = ""
	} else if _, err := isLoopback(c.MetricsListen); err != nil {
		p.fail(envMetricsListen, err.Error()+", or off")
		return p.err
	} else if samePort(c.MetricsListen, c.Listen) {
		p.fail(envMetricsListen, "is the API's address ("+envListen+"): give /metrics a port of its own, or off")
		return p.err
	}
	if c.APIKeys == nil && !loopback {
		return fmt.Errorf("refusing to listen on %s without an API key: anyone who can reach it could read and end every session. "+
			"Set %s, %s or %s, or listen on a loopback address such as 127.0.0.1:8080", c.Listen, envAPIKey, envAPIKeyFile, envAPIKeysFile)
	}
	if c.APIKeys == nil && c.RedisURL != "" {
		// A proxy on the same host makes every request arrive from, and
		// name, a loopback address: the Host check of a key-less service
		// then admits anyone the proxy admits.
		return fmt.Errorf("refusing to serve %s without an API key: a key-less service is for the embedded development store only "+
			"(a proxy on the same host would open it to anyone). Set %s, %s or %s", redactURL(c.RedisURL), envAPIKey, envAPIKeyFile, envAPIKeysFile)
	}
	if c.Issuer == "" {
		if !loopback {
			p.fail(envIssuer, "is required when listening on "+c.Listen+": the URL clients and gateways reach the service at, such as https://auth.example.com")
			return p.err
		}
		c.Issuer, c.issuerFromListen = c.listenURL(c.Listen), true
	}
	if c.AccessTokenAud == "" {
		c.AccessTokenAud, c.audienceFromIssuer = c.Issuer, true
	}
	if _, err := accesstoken.New(c.accessConfig(make([]byte, redisstore.MinSecretLen))); err != nil {
		return fmt.Errorf("access tokens (%s, %s, %s, %s, %s): %s", envIssuer, envAccessTokenTTL, envAccessTokenAud, envAccessTokenAlg, envAccessKeyPeriod,
			strings.TrimPrefix(err.Error(), "accesstoken: "))
	}
	return nil
}

// listenURL is the URL of the service listening on addr, on loopback.
func (c *config) listenURL(addr string) string {
	if c.TLSCertFile != "" {
		return "https://" + addr
	}
	return "http://" + addr
}

// listening tells the configuration the address the listener got: an
// issuer derived from the listen address (a loopback one, such as
// 127.0.0.1:0) names the port actually bound.
func (c *config) listening(addr string) {
	if !c.issuerFromListen {
		return
	}
	c.Issuer = c.listenURL(addr)
	if c.audienceFromIssuer {
		c.AccessTokenAud = c.Issuer
	}
}

// accessConfig returns the access tokens' configuration, keys derived from
// secret (the store's root secret).
func (c *config) accessConfig(secret []byte) accesstoken.Config {
	return accesstoken.Config{Secret: secret, Alg: c.AccessTokenAlg, Issuer: c.Issuer, Audience: c.AccessTokenAud,
		TTL: c.AccessTokenTTL, Period: c.AccessKeyPeriod, CacheSize: c.AuthMemory}
}

// isLoopback reports whether every address a listener on addr accepts
// connections on is a loopback address.
func isLoopback(addr string) (bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("want host:port, such as 127.0.0.1:8080")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return false, fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "localhost" {
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback(), nil
}

// samePort reports whether two listen addresses would bind one fixed port
// (port 0 picks a free one each time).
func samePort(a, b string) bool {
	_, pa, _ := net.SplitHostPort(a)
	_, pb, _ := net.SplitHostPort(b)
	return pa == pb && pa != "0"
}

// optionSettings names the setting of each library option the service
// sets, for the library's errors (redisstore.OptionError).
var optionSettings = map[string]string{
	"KeyPrefix":          envKeyPrefix,
	"IdleTTL":            envIdleTTL,
	"AbsoluteTTL":        envAbsoluteTTL,
	"Grace":              envGrace,
	"MaxSessions":        envMaxSessions,
	"RevocationReplicas": envRevocationReplicas,
	"ReplicationTimeout": envReplicationTimeout,
	"MaxInFlight":        envMaxInFlight,
}

// durationText writes a default duration the way a user would: 336h, not
// 336h0m0s.
func durationText(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// storeOptions returns the library's options for this configuration, but
// for OnEvent.
func (c *config) storeOptions(secret []byte) redisstore.Options {
	grace := c.Grace
	if grace == 0 {
		grace = redisstore.NoGrace // the library's 0 is its default
	}
	maxInFlight := c.MaxInFlight
	if maxInFlight == 0 {
		maxInFlight = redisstore.NoBatching // the same
	}
	return redisstore.Options{
		Secret:             secret,
		KeyPrefix:          c.KeyPrefix,
		IdleTTL:            c.IdleTTL,
		AbsoluteTTL:        c.AbsoluteTTL,
		Grace:              grace,
		GraceSameDevice:    c.GraceSameDevice,
		MaxSessions:        c.MaxSessions,
		RevocationReplicas: c.RevocationReplicas,
		ReplicationTimeout: c.ReplicationTimeout,
		MaxInFlight:        maxInFlight,
		LegacyHash:         c.legacyHash,
	}
}

// storeSecret returns the configured secret, or a random one and true.
func (c *config) storeSecret() ([]byte, bool) {
	if c.Secret != nil {
		return c.Secret, false
	}
	b := make([]byte, redisstore.MinSecretLen)
	rand.Read(b)
	return b, true
}

// logAttrs describes the effective configuration, without secrets.
func (c *config) logAttrs() []any {
	redis := "embedded miniredis"
	if c.RedisURL != "" {
		redis = redactURL(c.RedisURL)
	}
	apiKey := "none (loopback only)"
	if c.APIKeys != nil {
		apiKey = fmt.Sprintf("%d from %s", len(c.APIKeys), c.APIKeyFrom)
	}
	secret := "generated at start (tokens will not survive a restart)"
	if c.Secret != nil {
		secret = "set from " + c.SecretFrom
	}
	signing := "the secret, as key id 0"
	if c.SigningKeysFile != "" {
		signing = fmt.Sprintf("ids %v from %s, %d signs", keyIDs(c.SigningKeys), c.SigningKeysFile, c.SigningKeys[0].ID)
	}
	listenTLS := "off (plain HTTP)"
	if c.TLSCertFile != "" {
		listenTLS = "HTTPS with " + c.TLSCertFile
	}
	return []any{
		slog.String("listen", c.Listen),
		slog.String("metrics_listen", cmp.Or(c.MetricsListen, "off")),
		slog.String("redis", redis),
		slog.String("redis_mode", c.RedisMode),
		slog.String("redis_master", c.RedisMaster),
		slog.String("redis_timeout", c.RedisTimeout.String()),
		slog.String("key_prefix", c.KeyPrefix),
		slog.String("idle_ttl", c.IdleTTL.String()),
		slog.String("absolute_ttl", c.AbsoluteTTL.String()),
		slog.String("grace", graceString(c.Grace)),
		slog.Bool("grace_same_device", c.GraceSameDevice),
		slog.Int("max_sessions", c.MaxSessions),
		slog.Int("revocation_replicas", c.RevocationReplicas),
		slog.String("replication_timeout", c.ReplicationTimeout.String()),
		slog.String("max_in_flight", maxInFlightText(c.MaxInFlight)),
		slog.Bool("allow_evicting_policy", c.AllowEvicting),
		slog.String("shutdown_delay", c.ShutdownDelay.String()),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("auth_cookie", c.AuthCookie),
		slog.Bool("access_log", c.AccessLog),
		slog.String("issuer", c.Issuer),
		slog.String("access_token_ttl", c.AccessTokenTTL.String()),
		slog.String("access_token_audience", c.AccessTokenAud),
		slog.String("access_token_alg", c.AccessTokenAlg),
		slog.String("access_key_period", c.AccessKeyPeriod.String()),
		slog.String("refresh_cookie", c.RefreshCookie),
		slog.String("clients", clientsText(c)),
		slog.Int("auth_memory_sessions", c.AuthMemory),
		slog.String("revocation_heartbeat", c.Heartbeat.String()),
		slog.String("dpop_nonce_period", c.DPoPNoncePeriod.String()),
		slog.String("legacy_hash", c.LegacyHash),
		slog.String("api_key", apiKey),
		slog.String("secret", secret),
		slog.String("signing_keys", signing),
		slog.String("tls", listenTLS),
		slog.String("redis_tls", c.RedisOptions.tlsState()),
	}
}

// clientsText describes the client registry for the start-up log.
func clientsText(c *config) string {
	if c.ClientsFile == "" {
		return "open: every client id is a public client"
	}
	return fmt.Sprintf("%d from %s", c.Clients.Len(), c.ClientsFile)
}

// graceString shows a grace of 0 as off.
func graceString(d time.Duration) string {
	if d == 0 {
		return "off"
	}
	return d.String()
}

// maxInFlightText shows a MaxInFlight of 0 as off, the way it is set.
func maxInFlightText(n int) string {
	if n == 0 {
		return "off"
	}
	return strconv.Itoa(n)
}

// parser turns raw strings into typed values and keeps the first error,
// naming where the bad value came from.
type parser struct {
	raw, from map[string]string
	err       error
}

// fail records that the value of env is wrong, quoting it.
func (p *parser) fail(env, msg string) {
	src := p.from[env]
	if src == "" {
		src = env
	}
	p.failAt(fmt.Sprintf("%s=%q", src, p.raw[env]), msg)
}

// source names where the value of env came from: the flag or the variable.
func (p *parser) source(env string) string {
	if src := p.from[env]; src != "" {
		return src
	}
	return env
}

// failAt records an error about src, which must not hold a secret.
func (p *parser) failAt(src, msg string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s: %s", src, msg)
	}
}

func (p *parser) str(env string) string { return p.raw[env] }

func (p *parser) duration(env string) time.Duration {
	d, err := time.ParseDuration(p.raw[env])
	if err != nil {
		p.fail(env, "not a Go duration (such as 15s, 30m or 336h)")
	}
	return d
}

func (p *parser) integer(env string) int {
	n, err := strconv.Atoi(p.raw[env])
	if err != nil {
		p.fail(env, "not an integer")
	}
	return n
}

// integerOrOff reads a positive integer, or "off" as 0.
func (p *parser) integerOrOff(env string) int {
	if p.raw[env] == "off" {
		return 0
	}
	n, err := strconv.Atoi(p.raw[env])
	switch {
	case err != nil:
		p.fail(env, "not an integer or off")
	case n < 1:
		p.fail(env, "must be at least 1, or off")
	}
	return n
}

func (p *parser) boolean(env string) bool {
	b, err := strconv.ParseBool(p.raw[env])
	if err != nil {
		p.fail(env, "want true or false")
	}
	return b
}

// secret reads a secret from env, or from the file named by fileEnv, and
// says where it came from. Neither set: nil.
func (p *parser) secret(env, fileEnv string) ([]byte, string) {
	v, file := p.raw[env], p.raw[fileEnv]
	switch {
	case v != "" && file != "":
		p.failAt(env, "set either "+env+" or "+fileEnv+", not both")
		return nil, ""
	case v != "":
		return []byte(v), env
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			p.fail(fileEnv, err.Error())
			return nil, ""
		}
		b = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(b) == 0 {
			p.fail(fileEnv, "the file is empty")
			return nil, ""
		}
		src := p.from[fileEnv]
		return b, src + " (" + file + ")"
	}
	return nil, ""
}

// loadAPIKeys reads the API keys from the one place they are set: the
// variable SESSIONCACHE_API_KEY, the file SESSIONCACHE_API_KEY_FILE (one
// key, the whole file) or the file SESSIONCACHE_API_KEYS_FILE (one key a
// line). Both files are re-read when they change and on SIGHUP. Setting
// more than one is refused:
// a key left in the environment could not be revoked by editing the file.
func (c *config) loadAPIKeys(p *parser) {
	var set []string
	for _, env := range []string{envAPIKey, envAPIKeyFile, envAPIKeysFile} {
		if p.raw[env] != "" {
			set = append(set, env)
		}
	}
	switch {
	case len(set) > 1:
		p.failAt(set[0], "set only one of "+envAPIKey+", "+envAPIKeyFile+" and "+envAPIKeysFile+"; "+strings.Join(set, " and ")+" are set")
		return
	case len(set) == 0:
		return
	case set[0] == envAPIKey:
		c.APIKeys, c.APIKeyFrom = [][]byte{[]byte(p.raw[envAPIKey])}, envAPIKey
		return
	case set[0] == envAPIKeyFile:
		c.apiKeysRead = readAPIKeyFile
	default:
		c.apiKeysRead = readAPIKeys
	}
	c.APIKeysFile = p.raw[set[0]]
	c.APIKeyFrom = p.source(set[0]) + " (" + c.APIKeysFile + ")"
	c.apiKeysState = statFile(c.APIKeysFile)
	keys, err := c.apiKeysRead(c.APIKeysFile)
	if err != nil {
		p.failAt(p.source(set[0]), err.Error())
		return
	}
	c.APIKeys = keys
}

// writeSettings prints the table of settings as JSON, for the tools that
// check files against it (the deployment tests): each setting's variable,
// its flag ("" for a secret, which is environment only), its default.
func writeSettings(w io.Writer) error {
	type entry struct {
		Env     string `json:"env"`
		Flag    string `json:"flag"`
		Default string `json:"default"`
		Secret  bool   `json:"secret"`
	}
	list := make([]entry, len(settings))
	for i, s := range settings {
		list[i] = entry{Env: s.env, Flag: s.flag, Default: s.def, Secret: s.flag == ""}
	}
	return json.NewEncoder(w).Encode(list)
}
