package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/accesstoken"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/clients"
	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/sessionauth"
	"github.com/sessioncache/sessioncache/redisstore"
)

// Request limits.
const (
	maxBodyBytes        = 64 << 10
	maxHeaderBytes      = 16 << 10
	defaultRedisTimeout = 2 * time.Second
	readyTimeout        = 2 * time.Second
)

//go:embed openapi.yaml
var openAPIDoc []byte

// reply is what an API handler decided: the status and JSON body to send,
// and the outcome to count. err is logged, never sent.
type reply struct {
	status  int
	body    any
	outcome string
	err     error
	header  http.Header
	// auth holds the values of forward auth's X-Auth-User-Id,
	// X-Auth-Session-Id and X-Auth-Expires-At, set on the answer without a
	// header map of their own.
	auth []string
}

// errorBody is every error response. ErrorDescription is RFC 6749's
// human-readable text, on invalid_grant and temporarily_unavailable.
type errorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
	Reason           string `json:"reason,omitempty"`
}

// apiFunc answers a request of an API route; ctx is the request's, bounded
// by the Redis timeout.
type apiFunc func(ctx context.Context, r *http.Request) reply

// route is one operation of the service.
type route struct {
	pattern string   // net/http ServeMux pattern
	op      string   // the operation label in metrics and logs
	auth    bool     // needs the API key (the /v1 API)
	gateway bool     // forward auth: any method, any query, any path below pattern/; the key only in X-Sessioncache-Key, refused with 403
	query   []string // query parameters a /v1 route takes; others get 400
	write   bool     // writes to Redis: refused while Redis may evict keys (see eviction.go)
	api     apiFunc
	raw     http.Handler // instead of api, for non-JSON answers
	quiet   bool         // logged at debug level when it succeeds (probes, scrapes)
	ops     bool         // served on the operations listener (SESSIONCACHE_METRICS_LISTEN), not on the API's
}

type server struct {
	// current is swapped when the signing keys change (see store).
	current atomic.Pointer[redisstore.Store]
	// storesMu orders swaps of the store with the reading of the stores'
	// batch counts (batchStats): previous is the store before current,
	// on which requests in flight at the swap finish; retired holds the
	// counts of the stores before it.
	storesMu sync.Mutex
	previous *redisstore.Store
	retired  redisstore.BatchStats
	log      *slog.Logger
	metrics  *metrics
	// apiKeys holds the SHA-256 of each API key; nil: no key, loopback only.
	apiKeys      atomic.Pointer[[][sha256.Size]byte]
	authCookie   string // the cookie /v1/auth reads a token from
	checkEvict   bool
	policy       policyGate // refuses writes while Redis may evict keys
	absoluteTTL  time.Duration
	redisTimeout time.Duration
	draining     atomic.Bool
	mux          *http.ServeMux // the API's routes
	opsMux       *http.ServeMux // /metrics and /openapi.yaml, on a listener of their own
	routes       []route
	readyMu      sync.Mutex
	lastReadyErr string
	// aclProbe, unless nil, is the Redis that readiness checks once for
	// the commands the service needs (probeACL); aclPassed, once it has.
	aclProbe  redis.UniversalClient
	aclPassed atomic.Bool
	keyPrefix string
	accessLog bool // one log line per request

	tokens        *accesstoken.Authority           // signs and verifies access tokens
	gate          *sessionauth.Gate                // session liveness from memory
	clients       atomic.Pointer[clients.Registry] // swapped when the clients file changes
	refreshCookie string                           // "": refresh tokens travel in bodies only
	tokenPrefix   string                           // of refresh tokens, to recognise one where none belongs
	metadata      []byte                           // RFC 8414 document
	dpop          *dpopGuard                       // DPoP proofs (RFC 9449)
}

type serverConfig struct {
	store      *redisstore.Store
	log        *slog.Logger
	metrics    *metrics
	apiKeys    [][]byte // any of them is accepted; none: loopback only
	checkEvict bool     // check Redis's maxmemory-policy for readiness and before writes
	// absoluteTTL is the store's AbsoluteTTL: a session began that long
	// before its absolute deadline (introspection's iat). Default:
	// redisstore.DefaultAbsoluteTTL.
	absoluteTTL time.Duration
	// authCookie is the cookie /v1/auth reads a token from. Default: sc_session.
	authCookie string
	// redisTimeout bounds the Redis calls of one request. Default: 2s.
	redisTimeout time.Duration
	// accessLog logs every request. Off, only failures, refused API keys
	// and security events are logged.
	accessLog bool
	// tokens issues and verifies access tokens; issuer is their iss.
	tokens *accesstoken.Authority
	issuer string
	// gateLease and gateSessions configure the memory of sessions seen
	// live (sessionauth.Config's Lease and MaxSessions).
	gateLease    time.Duration
	gateSessions int
	// clients is the OAuth client registry. Default: open.
	clients *clients.Registry
	// refreshCookie is the cookie the token endpoint reads and sets; "":
	// none.
	refreshCookie string
	// tokenPrefix is the refresh tokens' prefix. Default:
	// redisstore.DefaultTokenPrefix.
	tokenPrefix string
	// dpop checks DPoP proofs (newDPoPGuard). Required.
	dpop *dpopGuard
	// aclProbe is the Redis whose ACL readiness checks (probeACL); nil:
	// none (the embedded miniredis has no ACL). keyPrefix is the store's.
	aclProbe  redis.UniversalClient
	keyPrefix string
}

func newServer(c serverConfig) *server {
	s := &server{log: c.log, metrics: c.metrics, checkEvict: c.checkEvict, mux: http.NewServeMux(), opsMux: http.NewServeMux(),
		redisTimeout: c.redisTimeout, authCookie: c.authCookie, lastReadyErr: "not checked yet", accessLog: c.accessLog}
	if s.redisTimeout <= 0 {
		s.redisTimeout = defaultRedisTimeout
	}
	s.absoluteTTL = c.absoluteTTL
	if s.absoluteTTL <= 0 {
		s.absoluteTTL = redisstore.DefaultAbsoluteTTL
	}
	if s.authCookie == "" {
		s.authCookie = defaultAuthCookie
	}
	s.current.Store(c.store)
	s.aclProbe, s.keyPrefix = c.aclProbe, c.keyPrefix
	c.metrics.watchStores(s.batchStats)
	if c.apiKeys != nil {
		s.setAPIKeys(c.apiKeys)
	}
	s.tokens, s.refreshCookie, s.tokenPrefix = c.tokens, c.refreshCookie, c.tokenPrefix
	if s.tokenPrefix == "" {
		s.tokenPrefix = redisstore.DefaultTokenPrefix
	}
	s.gate = sessionauth.New(sessionauth.Config{Lease: c.gateLease, MaxSessions: c.gateSessions, Timeout: s.redisTimeout,
		Check: func(ctx context.Context, user, sid string) error { return s.store().CheckSession(ctx, user, sid) }})
	if c.clients == nil {
		c.clients = clients.Open()
	}
	s.clients.Store(c.clients)
	s.dpop = c.dpop
	s.metadata = newMetadata(c.issuer, c.tokens.Alg())
	s.routes = []route{
		{pattern: "POST /v1/sessions", op: "issue", auth: true, write: true, api: s.issue},
		{pattern: "POST /v1/tokens/rotate", op: "rotate", auth: true, write: true, api: s.rotate},
		{pattern: "POST /v1/tokens/introspect", op: "introspect", auth: true, api: s.introspect},
		{pattern: "POST /v1/tokens/revoke", op: "revoke", auth: true, api: s.revokeToken},
		{pattern: "GET /v1/users/{user_id}/sessions", op: "list_sessions", auth: true, query: []string{"cursor", "limit"}, api: s.listSessions},
		{pattern: "DELETE /v1/users/{user_id}/sessions/{session_id}", op: "revoke_session", auth: true, api: s.revokeSession},
		{pattern: "DELETE /v1/users/{user_id}/sessions", op: "revoke_all", auth: true, query: []string{"except"}, api: s.revokeAll},
		{pattern: "/v1/auth", op: "auth", auth: true, gateway: true, api: s.forwardAuth},
		{pattern: "POST " + tokenPath, op: "token", write: true, api: s.token},
		{pattern: "GET " + jwksPath, op: "jwks", quiet: true, raw: http.HandlerFunc(s.serveJWKS)},
		{pattern: "GET " + metadataPath, op: "metadata", quiet: true, raw: http.HandlerFunc(s.serveMetadata)},
		{pattern: "GET /healthz", op: "healthz", quiet: true, api: s.healthz},
		{pattern: "GET /readyz", op: "readyz", quiet: true, api: s.readyz},
		{pattern: "GET /metrics", op: "metrics", quiet: true, ops: true, raw: c.metrics.handler()},
		{pattern: "GET /openapi.yaml", op: "openapi", quiet: true, ops: true, raw: http.HandlerFunc(serveOpenAPI)},
	}
	if u, err := url.Parse(c.issuer); err == nil && strings.Trim(u.Path, "/") != "" {
		// RFC 8414 section 3.1: the metadata of an issuer with a path is at
		// the well-known path followed by the issuer's path.
		s.routes = append(s.routes, route{pattern: "GET " + metadataPath + "/" + strings.Trim(u.Path, "/"), op: "metadata", quiet: true, raw: http.HandlerFunc(s.serveMetadata)})
	}
	for _, rt := range s.routes {
		if rt.ops {
			s.opsMux.Handle(rt.pattern, s.wrap(rt))
			continue
		}
		s.mux.Handle(rt.pattern, s.wrap(rt))
		if rt.gateway {
			// Envoy's ext_authz appends the client's path to the one it
			// is given.
			s.mux.Handle(rt.pattern+"/", s.wrap(rt))
		}
	}
	return s
}

// ServeHTTP routes a request of the API's listener; unknown paths and
// methods get JSON errors. While draining, every answer closes its
// connection, so that clients move to other replicas before the listener
// closes and no idle keep-alive connection is closed under a request that
// is just arriving.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.serve(s.mux, w, r)
}

// ops is the handler of the operations listener (SESSIONCACHE_METRICS_LISTEN):
// /metrics and /openapi.yaml, which the API's listener does not serve, so
// that whoever may scrape the service reaches nothing else, and whoever may
// call the API needs no access to the operations port.
func (s *server) ops() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(s.opsMux, w, r) })
}

func (s *server) serve(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	var start time.Time
	if s.accessLog {
		start = time.Now()
	}
	if s.draining.Load() {
		w.Header().Set("Connection", "close")
	}
	rec := statusWriters.Get().(*statusWriter)
	*rec = statusWriter{ResponseWriter: w}
	mux.ServeHTTP(rec, r)
	if !rec.routed && s.accessLog {
		// The raw path is not logged: a client may have put a token in it.
		s.logRequest(r, "unmatched", rec.status, "not_routed", start, slog.LevelInfo)
	}
	// A handler that panicked never gets here: its writer is not reused.
	*rec = statusWriter{}
	statusWriters.Put(rec)
}

// statusWriters recycles the statusWriter of each request: no handler keeps
// its ResponseWriter once it has returned.
var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

// wrap applies, around every route: panic recovery, the API key, the query
// parameters of API routes, the body limit, JSON answers, metrics and one
// log line.
func (s *server) wrap(rt route) http.Handler {
	observe := s.metrics.forOperation(rt.op)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec, ok := w.(*statusWriter)
		if !ok {
			rec = &statusWriter{ResponseWriter: w}
		}
		rec.routed = true
		outcome := "ok"
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic while serving a request", "operation", rt.op, "panic", fmt.Sprint(v))
				outcome = "internal_error"
				if rec.status == 0 {
					writeJSON(rec, http.StatusInternalServerError, errorBody{Error: "internal_error"}, nil)
				}
			}
			observe(outcome, time.Since(start).Seconds())
			switch {
			case outcome == "unauthorized" || outcome == "forbidden":
				// A wrong API key, or a key-less service reached by another
				// name: a misconfigured caller or a probe.
				s.logRequest(r, rt.op, rec.status, outcome, start, slog.LevelWarn)
			case !s.accessLog:
			case rt.quiet && rec.status < 300:
				s.logRequest(r, rt.op, rec.status, outcome, start, slog.LevelDebug)
			default:
				s.logRequest(r, rt.op, rec.status, outcome, start, slog.LevelInfo)
			}
		}()
		if rt.auth {
			if rp, ok := s.authorize(r, rt.gateway); !ok {
				outcome = rp.outcome
				writeJSON(rec, rp.status, rp.body, rp.header)
				return
			}
		}
		if rt.raw != nil {
			rt.raw.ServeHTTP(rec, r)
			if rec.status >= 400 {
				outcome = "error"
			}
			return
		}
		rp := s.call(rt, rec, r)
		outcome = rp.outcome
		if rp.err != nil {
			// A 500 is the service's fault or Redis's data, not a passing
			// outage: it needs someone to look.
			level := slog.LevelWarn
			if rp.status == http.StatusInternalServerError {
				level = slog.LevelError
			}
			s.log.Log(r.Context(), level, "request failed", "operation", rt.op, "outcome", rp.outcome, "error", rp.err.Error())
		}
		if rp.auth != nil {
			h := rec.Header()
			h[headerUserID] = rp.auth[0:1:1]
			h[headerSessionID] = rp.auth[1:2:2]
			h[headerExpiresAt] = rp.auth[2:3:3]
		}
		writeJSON(rec, rp.status, rp.body, rp.header)
	})
}

// call runs the handler of an API route, after checking the query
// parameters of a /v1 route, with the body limit and the Redis timeout.
func (s *server) call(rt route, w http.ResponseWriter, r *http.Request) reply {
	if rt.auth && !rt.gateway {
		if rp, ok := checkQuery(r, rt.query...); !ok {
			return rp
		}
	}
	if rt.gateway {
		// Forward auth reads no body, and mostly answers from memory: the
		// Redis timeout is applied where it asks Redis (sessionauth), not
		// to every request.
		return rt.api(r.Context(), r)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	ctx, cancel := context.WithTimeout(r.Context(), s.redisTimeout)
	defer cancel()
	if rt.write {
		if rp, ok := s.writable(ctx); !ok {
			return rp
		}
	}
	return rt.api(ctx, r)
}

func (s *server) logRequest(r *http.Request, op string, status int, outcome string, start time.Time, level slog.Level) {
	s.log.LogAttrs(r.Context(), level, "request",
		slog.String("method", r.Method),
		slog.String("operation", op),
		slog.Int("status", status),
		slog.String("outcome", outcome),
		slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
		slog.String("remote", r.RemoteAddr),
	)
}

// authorize checks the API key; without one, it accepts only requests that
// name a loopback host, so that a web page cannot reach a key-less service
// through DNS rebinding. The key comes in X-Sessioncache-Key or, but for a
// gateway route (whose Authorization header is the user's), as
// Authorization: Bearer <key>; when both are sent, X-Sessioncache-Key
// decides. A gateway route refuses a bad key with 403, so that a gateway can
// tell its own misconfiguration from a user's bad token (401).
func (s *server) authorize(r *http.Request, gateway bool) (reply, bool) {
	keys := s.apiKeys.Load()
	if keys == nil {
		if !loopbackHost(r.Host) {
			return reply{status: http.StatusForbidden, outcome: "forbidden",
				body: errorBody{Error: "forbidden", Reason: "without an API key the service answers only requests to a loopback host"}}, false
		}
		return reply{}, true
	}
	key, ok := r.Header[apiKeyHeader]
	auth, one := oneHeader(r, "Authorization")
	if len(key) > 1 || !gateway && !one {
		// Never a pick between two keys (a gateway route's Authorization
		// is the user's: forward auth refuses its duplicates itself).
		status, code := http.StatusBadRequest, "invalid_request"
		if gateway {
			status, code = http.StatusForbidden, "forbidden"
		}
		return reply{status: status, outcome: reasonAmbiguous,
			body: errorBody{Error: code, Reason: reasonAmbiguous + ": " + apiKeyHeader + " or Authorization sent more than once"}}, false
	}
	given := ""
	switch {
	case ok:
		given = strings.TrimSpace(key[0])
	case !gateway:
		if scheme, k, _ := strings.Cut(auth, " "); strings.EqualFold(scheme, "Bearer") {
			given = strings.TrimSpace(k)
		}
	}
	if validAPIKey(*keys, given) {
		return reply{}, true
	}
	if gateway {
		return reply{status: http.StatusForbidden, outcome: "unauthorized",
			body: errorBody{Error: "forbidden", Reason: "missing or wrong API key (" + apiKeyHeader + ": <key>)"}}, false
	}
	return reply{status: http.StatusUnauthorized, outcome: "unauthorized",
		body:   errorBody{Error: "unauthorized", Reason: "missing or wrong API key (Authorization: Bearer <key>, or " + apiKeyHeader + ": <key>)"},
		header: http.Header{"Www-Authenticate": {`Bearer realm="sessioncache"`}}}, false
}

// store is the store for a request to use: a request in flight when the
// signing keys change finishes on the store it loaded.
func (s *server) store() *redisstore.Store { return s.current.Load() }

// setStore swaps the store, for new signing keys.
func (s *server) setStore(st *redisstore.Store) {
	s.storesMu.Lock()
	defer s.storesMu.Unlock()
	if s.previous != nil {
		s.retired = addBatchStats(s.retired, s.previous.BatchStats())
		s.retired.Waiting = 0 // a gauge of that store, no longer read
	}
	s.previous = s.current.Swap(st)
}

// batchStats adds up the batch counts of the stores the server used, so
// that they never go back when the store is swapped. The current store
// and the one before it are read as they are; older ones as they were at
// the swap that retired them (the rare call that still ran on one then is
// not counted).
func (s *server) batchStats() redisstore.BatchStats {
	s.storesMu.Lock()
	defer s.storesMu.Unlock()
	t := addBatchStats(s.retired, s.current.Load().BatchStats())
	if s.previous != nil {
		t = addBatchStats(t, s.previous.BatchStats())
	}
	return t
}

func addBatchStats(a, b redisstore.BatchStats) redisstore.BatchStats {
	return redisstore.BatchStats{Calls: a.Calls + b.Calls, Requests: a.Requests + b.Requests, Batched: a.Batched + b.Batched,
		Waited: a.Waited + b.Waited, Largest: max(a.Largest, b.Largest), Moving: a.Moving + b.Moving, Waiting: a.Waiting + b.Waiting}
}

// setAPIKeys swaps the accepted API keys, at least one.
func (s *server) setAPIKeys(keys [][]byte) {
	sums := make([][sha256.Size]byte, len(keys))
	for i, k := range keys {
		sums[i] = sha256.Sum256(k)
	}
	s.apiKeys.Store(&sums)
}

// validAPIKey reports whether given is one of the API keys. Every key is
// compared, in constant time, whichever matches.
func validAPIKey(keys [][sha256.Size]byte, given string) bool {
	sum := sha256.Sum256([]byte(given))
	ok := 0
	for i := range keys {
		ok |= subtle.ConstantTimeCompare(sum[:], keys[i][:])
	}
	return ok == 1
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

func (s *server) healthz(context.Context, *http.Request) reply {
	return reply{status: http.StatusOK, body: map[string]string{"status": "ok"}, outcome: "ok"}
}

// readyz answers 200 when Redis answers, the scripts are loaded and (for a
// real Redis) the eviction policy is safe; 503 while draining.
func (s *server) readyz(ctx context.Context, _ *http.Request) reply {
	reason, err := s.checkReady(ctx)
	s.noteReadiness(reason, err)
	if reason != "" {
		return reply{status: http.StatusServiceUnavailable, outcome: "not_ready",
			body: map[string]string{"status": "not_ready", "reason": reason}}
	}
	return reply{status: http.StatusOK, body: map[string]string{"status": "ready"}, outcome: "ok"}
}

// checkReady returns a short public reason the service is not ready, and
// the detailed error for the log.
func (s *server) checkReady(ctx context.Context) (string, error) {
	if s.draining.Load() {
		return "draining", nil
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := s.store().Ping(ctx); err != nil {
		if isNoPerm(err) {
			return "redis_acl", aclError(err, s.keyPrefix)
		}
		return "redis_unavailable", err
	}
	if s.aclProbe != nil && !s.aclPassed.Load() {
		if err := probeACL(ctx, s.aclProbe, s.keyPrefix); err != nil {
			if errors.Is(err, errACL) {
				return "redis_acl", err
			}
			return "redis_unavailable", err
		}
		s.aclPassed.Store(true)
	}
	if s.checkEvict {
		if err := s.checkEvictionPolicy(ctx); err != nil {
			if errors.Is(err, redisstore.ErrEvictionPolicy) {
				return "unsafe_eviction_policy", err
			}
			return "redis_unavailable", err
		}
	}
	return "", nil
}

// noteReadiness logs changes of readiness, not every probe.
func (s *server) noteReadiness(reason string, err error) {
	msg := reason
	if err != nil {
		msg += ": " + err.Error()
	}
	s.readyMu.Lock()
	changed := msg != s.lastReadyErr
	s.lastReadyErr = msg
	s.readyMu.Unlock()
	switch {
	case !changed:
	case reason == "":
		s.log.Info("ready")
	case reason == "redis_acl":
		s.log.Error("not ready: "+msg, "reason", reason)
	case reason == "unsafe_eviction_policy":
		s.log.Error("not ready: Redis may evict live sessions and revocations; set maxmemory-policy noeviction, or "+envAllowEvicting+"=true to accept the risk", "error", msg)
	default:
		s.log.Warn("not ready", "reason", msg)
	}
}

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(openAPIDoc)
}

// Header values of every JSON answer, shared by all of them: a slice in a
// header map is never modified in place, only replaced.
var (
	headerNoStore = []string{"no-store"}
	headerNoSniff = []string{"nosniff"}
	headerJSON    = []string{mediaJSON}
)

func writeJSON(w http.ResponseWriter, status int, body any, header http.Header) {
	h := w.Header()
	for k, v := range header {
		h[k] = v
	}
	h["Cache-Control"] = headerNoStore
	h["X-Content-Type-Options"] = headerNoSniff
	if body == nil {
		// An answer of headers only (forward auth).
		w.WriteHeader(status)
		return
	}
	h["Content-Type"] = headerJSON
	b, err := encodeBody(body)
	defer putBody(b)
	w.WriteHeader(status)
	if err == nil {
		w.Write(*b)
	}
}

// statusWriter remembers the status written. Until a route takes the
// request (routed), it turns the plain-text 404 and 405 answers of
// ServeMux into JSON errors.
type statusWriter struct {
	http.ResponseWriter
	status   int
	routed   bool
	replaced bool // a JSON error replaced ServeMux's answer
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.routed && w.status == 0 && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		e := "not_found"
		if code == http.StatusMethodNotAllowed {
			e = "method_not_allowed"
		}
		w.status, w.replaced = code, true
		writeJSON(w.ResponseWriter, code, errorBody{Error: e}, nil)
		return
	}
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}
