// Command bare serves bench.Bare, the ceiling of cmd/sessioncache: a bare
// net/http handler doing one go-redis SET per request, with the service's
// Redis client settings (redis.ParseURL, ContextTimeoutEnabled, a 2s
// timeout per request) and HTTP server timeouts; or, with -headers,
// bench.BareHeaders, the ceiling of forward auth: 200 with three headers
// and no I/O. bench/cpucost starts it beside the service and drives both
// with cmd/loadgen (-target bare).
//
//	bare -listen 127.0.0.1:8090 -redis redis://127.0.0.1:26379/0
//	bare -listen 127.0.0.1:8091 -headers
//
// It logs {"msg":"listening","addr":...} as JSON on stderr, as the service
// does, and deletes its key when SIGTERM or SIGINT stops it.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/bench"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to serve HTTP on")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379/0", "Redis URL")
	headers := flag.Bool("headers", false, "answer 200 with three headers and do no I/O (the ceiling of forward auth); no Redis")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*listen, *redisURL, *headers, log); err != nil {
		log.Error(err.Error())
		os.Exit(1)
	}
}

func run(listen, redisURL string, headers bool, log *slog.Logger) error {
	handler := bench.BareHeaders()
	key := ""
	if !headers {
		opt, err := redis.ParseURL(redisURL)
		if err != nil {
			return err
		}
		opt.ContextTimeoutEnabled = true
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		var b [4]byte
		rand.Read(b[:])
		key = "bare:" + hex.EncodeToString(b[:])
		defer rdb.Del(context.Background(), key)
		handler = bench.Bare(rdb, key, 2*time.Second)
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	log.Info("listening", "addr", ln.Addr().String(), "key", key)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		return hs.Close()
	}
}
