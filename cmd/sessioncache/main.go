// Command sessioncache serves the redisstore library over HTTP, for API
// gateways and auth services that are not written in Go: logins, refresh
// token rotation with reuse detection, introspection, revocation and the
// listing of a user's sessions. See README.md beside this file and the
// OpenAPI document at /openapi.yaml (on the metrics listener).
//
// With no configuration it listens on 127.0.0.1:8080 (the API) and
// 127.0.0.1:9090 (/metrics, /openapi.yaml) on an in-process miniredis; every setting is an environment variable and a flag
// (sessioncache -h lists them). "sessioncache import" imports the refresh
// tokens of a SQL table (sessioncache import -h); "sessioncache move" moves
// the sessions of a Redis or Sentinel group onto a cluster (sessioncache
// move -h).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/accesstoken"
	"github.com/sessioncache/sessioncache/redisstore"
)

func main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt, syscall.SIGHUP)
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr, sig))
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

// run is the whole program: it serves until the first signal on sig, then
// drains and returns the exit code. Logs go to out as JSON lines.
func run(args []string, getenv func(string) string, out io.Writer, sig <-chan os.Signal) int {
	if len(args) > 0 && args[0] == "import" {
		return runImport(args[1:], getenv, out, sig)
	}
	if len(args) > 0 && args[0] == "move" {
		return runMove(args[1:], getenv, out, sig)
	}
	cfg, err := loadConfig(args, getenv, out)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if errors.Is(err, errShowVersion) {
		fmt.Fprintln(out, readBuild())
		return exitOK
	}
	if errors.Is(err, errShowSettings) {
		if err := writeSettings(out); err != nil {
			return exitFailed
		}
		return exitOK
	}
	if err != nil {
		slog.New(slog.NewJSONHandler(out, nil)).Error("refusing to start: " + err.Error())
		return exitConfig
	}
	log := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if cfg.Check != "" {
		return probe(cfg, log)
	}
	log.Info("starting sessioncache", cfg.logAttrs()...)
	redis.SetLogger(redisLogger{log})

	secret, generated := cfg.storeSecret()
	if generated {
		log.Warn("no secret configured (" + envSecret + " or " + envSecretFile + "): generated a random one; tokens will not survive a restart")
	}
	if cfg.APIKeys == nil {
		log.Warn("no API key configured (" + envAPIKey + ", " + envAPIKeyFile + " or " + envAPIKeysFile + "): /v1 is open to every local process; listening on a loopback address only")
	}
	if cfg.RedisTLS.insecure {
		log.Warn(envRedisInsecure + "=true: Redis's certificate is not verified; anyone on the network path can read and change every session")
	}
	if cfg.RedisTLS.clientCert != nil {
		cfg.RedisTLS.clientCert.log = log
	}
	be, err := openRedis(cfg.RedisOptions)
	if err != nil {
		log.Error("cannot start: " + err.Error())
		return exitFailed
	}
	defer be.Close()
	checkEvict := be.embedded == nil && !cfg.AllowEvicting
	switch {
	case be.embedded != nil:
		log.Info("using an embedded in-process miniredis: data lives in memory and is lost at exit; set "+envRedisURL+" to use a real Redis", "addr", be.embedded.Addr())
	case cfg.AllowEvicting:
		log.Warn(envAllowEvicting + "=true: Redis's maxmemory-policy is not checked; an evicting policy can silently drop live sessions and revocations")
	}

	tr, err := newTracing(context.Background(), getenv, cfg.Listen)
	if err == nil && tr != nil {
		err = tr.instrument(be.client)
	}
	if err != nil {
		log.Error("refusing to start: " + err.Error())
		return exitConfig
	}
	if tr != nil {
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tr.shutdown(ctx); err != nil {
				log.Warn("exporting the last spans: " + err.Error())
			}
		}()
		log.Info("tracing: OpenTelemetry spans of requests and Redis commands exported over OTLP (" + envOTLPEndpoint + ")")
	}

	var aclProbe redis.UniversalClient // the embedded miniredis has no ACL
	if be.embedded == nil {
		aclProbe = be.client
	}
	m := newMetrics(be.client)
	opt := cfg.storeOptions(secret)
	if cfg.MoveFromURL != "" {
		from, err := openRedis(cfg.MoveFrom)
		if err != nil {
			log.Error("cannot start: " + err.Error())
			return exitFailed
		}
		defer from.Close()
		opt.MoveFrom = from.client
		log.Warn("moving from "+redactURL(cfg.MoveFromURL)+": every call moves its user's keys first (one more round trip); run sessioncache move, then unset "+envMoveFrom,
			"from", redactURL(cfg.MoveFromURL))
	}
	var s *server // set before the store serves a call
	opt.OnEvent = func(ctx context.Context, e redisstore.Event) { s.onStoreEvent(ctx, e) }
	opt.Keys = cfg.SigningKeys
	store, err := redisstore.New(be.client, opt)
	if err != nil {
		log.Error("refusing to start: " + err.Error())
		return exitConfig
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error("cannot listen: " + err.Error())
		return exitFailed
	}
	defer ln.Close()
	cfg.listening(ln.Addr().String())
	tokens, err := accesstoken.New(cfg.accessConfig(secret))
	if err != nil {
		log.Error("refusing to start: " + err.Error())
		return exitConfig
	}
	guard, err := newDPoPGuard(dpopSetup{redis: be.client, keyPrefix: cfg.KeyPrefix, secret: secret, issuer: cfg.Issuer, noncePeriod: cfg.DPoPNoncePeriod})
	if err != nil {
		log.Error("refusing to start: " + err.Error())
		return exitConfig
	}
	s = newServer(serverConfig{store: store, log: log, metrics: m, apiKeys: cfg.APIKeys, checkEvict: checkEvict, redisTimeout: cfg.RedisTimeout,
		absoluteTTL: cfg.AbsoluteTTL, authCookie: cfg.AuthCookie, accessLog: cfg.AccessLog,
		tokens: tokens, issuer: cfg.Issuer, clients: cfg.Clients, refreshCookie: cfg.RefreshCookie,
		gateLease: 4 * cfg.Heartbeat, gateSessions: cfg.AuthMemory, dpop: guard, keyPrefix: cfg.KeyPrefix, aclProbe: aclProbe})
	m.watchGate(s.gate)
	var handler http.Handler = s
	if tr != nil {
		handler = tr.handler(s)
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	rl := newReloader(cfg, s, be.client, opt, log)
	if cfg.RedisTLS.clientCert != nil {
		rl.certs = append(rl.certs, cfg.RedisTLS.clientCert)
	}
	if cfg.TLSCertFile != "" {
		certs, err := newCertReloader("HTTPS certificate", cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			log.Error("cannot start: " + err.Error())
			return exitFailed
		}
		certs.log = log
		rl.certs = append(rl.certs, certs)
		hs.TLSConfig = certs.serverTLSConfig()
		log.Info("serving HTTPS", certAttrs(certs.current())...)
	}
	served := make(chan error, 2)
	listening := []any{"addr", ln.Addr().String(), "issuer", cfg.Issuer, "metrics_addr", "off"}
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			log.Error("cannot listen for /metrics (" + envMetricsListen + "): " + err.Error())
			return exitFailed
		}
		ms := &http.Server{Handler: s.ops(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second,
			IdleTimeout: 60 * time.Second, MaxHeaderBytes: maxHeaderBytes, ErrorLog: hs.ErrorLog}
		defer ms.Close()
		go func() { served <- fmt.Errorf("the metrics listener: %w", ms.Serve(mln)) }()
		addr := mln.Addr().String()
		listening = append(listening[:4], "metrics_addr", addr, "openapi", "http://"+addr+"/openapi.yaml")
	}
	log.Info("listening", listening...)
	go func() {
		if hs.TLSConfig != nil {
			served <- hs.ServeTLS(ln, "", "")
			return
		}
		served <- hs.Serve(ln)
	}()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go s.watch(watchCtx, evictionCheckInterval)
	go s.watchRevocations(watchCtx, store, cfg.Heartbeat)
	go s.syncClock(watchCtx)

	var keyFilesChanged <-chan time.Time
	if len(rl.files) > 0 {
		t := time.NewTicker(keyCheckInterval)
		defer t.Stop()
		keyFilesChanged = t.C
	}
	stop, hup := splitSignals(sig)
	for {
		select {
		case <-keyFilesChanged:
			rl.checkFiles()
		case <-hup:
			rl.reload()
		case err := <-served:
			log.Error("server failed: " + err.Error())
			return exitFailed
		case got := <-stop:
			// Load balancers need the delay after SIGTERM; someone pressing
			// Ctrl-C does not.
			delay := cfg.ShutdownDelay
			if got == os.Interrupt {
				delay = 0
			}
			log.Info("received "+got.String()+": draining; /readyz fails from now on", "shutdown_delay", delay.String())
			return drain(hs, s, delay, cfg.ShutdownTimeout, log, stop)
		}
	}
}

// splitSignals separates SIGHUP (reload; several pending make one) from the
// signals that stop the process.
func splitSignals(sig <-chan os.Signal) (stop <-chan os.Signal, hup <-chan struct{}) {
	st := make(chan os.Signal, 2)
	h := make(chan struct{}, 1)
	go func() {
		for got := range sig {
			if got == syscall.SIGHUP {
				select {
				case h <- struct{}{}:
				default:
				}
				continue
			}
			st <- got
		}
	}()
	return st, h
}

// drain fails readiness, waits for load balancers to notice (answers close
// their connections meanwhile, see ServeHTTP), then stops accepting
// connections and waits for in-flight requests. A second signal stops at
// once. It does not call SetKeepAlivesEnabled(false): that closes idle
// connections at once, including one whose request has just arrived
// (golang/go#65802), and that request's answer is lost.
func drain(hs *http.Server, s *server, delay, timeout time.Duration, log *slog.Logger, sig <-chan os.Signal) int {
	s.draining.Store(true)
	select {
	case <-time.After(delay):
	case <-sig:
		log.Warn("second signal: stopping now")
		hs.Close()
		return exitFailed
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-sig:
			log.Warn("second signal: stopping now")
			cancel()
		case <-ctx.Done():
		}
	}()
	log.Info("closing the listener; waiting for in-flight requests", "shutdown_timeout", timeout.String())
	if err := hs.Shutdown(ctx); err != nil {
		log.Error("in-flight requests did not finish: " + err.Error())
		hs.Close()
		return exitFailed
	}
	log.Info("stopped")
	return exitOK
}

// probe asks the service this configuration describes for path, as a
// container health check where there is no curl.
func probe(cfg *config, log *slog.Logger) int {
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	if !strings.HasPrefix(cfg.Check, "/") {
		log.Error("-check wants a path such as /readyz")
		return exitConfig
	}
	client := &http.Client{Timeout: 3 * time.Second}
	scheme := "http"
	if cfg.TLSCertFile != "" {
		// The certificate names the service, not 127.0.0.1; the probe
		// sends nothing secret and only reads the status.
		scheme = "https"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	url := scheme + "://" + net.JoinHostPort(host, port) + cfg.Check
	resp, err := client.Get(url)
	if err != nil {
		log.Error("check failed", "url", url, "error", err.Error())
		return exitFailed
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		log.Error("check failed", "url", url, "status", resp.StatusCode)
		return exitFailed
	}
	log.Debug("check passed", "url", url)
	return exitOK
}
