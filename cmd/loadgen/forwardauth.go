package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sessioncache/sessioncache/bench"
)

// forwardAuth asks the service, as a gateway's auth hook does, whether
// access is a live access token of a session of user.
type forwardAuth func(ctx context.Context, access, user string) error

// newForwardAuth returns the forward-auth operation of the service at base:
// GET /v1/auth with the access token as a bearer and the API key (if any)
// in X-Sessioncache-Key, over up to conns keep-alive connections. Anything
// but a 200 naming user is an error. With d, the access tokens are bound
// to d's key: each request carries them as DPoP with a fresh proof.
func newForwardAuth(base, apiKey string, conns int, d *bench.DPoPClient) forwardAuth {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	endpoint := strings.TrimRight(base, "/") + "/v1/auth"
	return func(ctx context.Context, access, user string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
		if err != nil {
			return err
		}
		if d != nil {
			if err := setDPoPAuth(req, d, access); err != nil {
				return err
			}
		} else {
			req.Header.Set("Authorization", "Bearer "+access)
		}
		if apiKey != "" {
			req.Header.Set("X-Sessioncache-Key", apiKey)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v1/auth: %s", resp.Status)
		}
		// The header is percent-encoded; the ids loadgen uses are UUIDs,
		// which it leaves alone, but decode as an upstream would.
		got, err := url.PathUnescape(resp.Header.Get("X-Auth-User-Id"))
		if err != nil || got != user {
			return fmt.Errorf("%w: GET /v1/auth named user %q, want %q", errUnexpected, resp.Header.Get("X-Auth-User-Id"), user)
		}
		return nil
	}
}
