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

// BareHeaders is the ceiling of forward auth: a bare net/http handler that
// answers 200, with no body, and the three identity headers a gateway
// forwards (the values of a real answer), and does no I/O at all. The
// service's GET /v1/auth, answered from memory, is read against it.
func BareHeaders() http.Handler {
	user := []string{"8a1c6a0e-3f7b-4f0e-b1b7-6a2d9f1c0e01"}
	session := []string{"f4cb90c7-65a4-4084-ba70-89c1f31906dc"}
	expires := []string{"2026-12-07T01:47:10.000Z"}
	noStore := []string{"no-store"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Auth-User-Id"], h["X-Auth-Session-Id"], h["X-Auth-Expires-At"], h["Cache-Control"] = user, session, expires, noStore
		w.WriteHeader(http.StatusOK)
	})
}
