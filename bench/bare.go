package bench

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bare is the ceiling of an HTTP service in front of Redis: a bare net/http
// handler that reads the request body and stores it with one go-redis SET
// under key (expiring after an hour), each call bounded by timeout, and
// answers 200 {"ok":true}. No routing, authentication, JSON decoding,
// metrics or logs. cmd/sessioncache's CPU per request is read against it
// (bench/cpucost runs both under the same load generator).
func Bare(rdb redis.UniversalClient, key string, timeout time.Duration) http.Handler {
	ok := []byte("{\"ok\":true}\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, "the body could not be read", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if err := rdb.Set(ctx, key, body, time.Hour).Err(); err != nil {
			http.Error(w, "redis unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(ok)
	})
}
