package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sessioncache/sessioncache/bench"
)

// instance is one running service and the clients that talk to it.
type instance struct {
	n       int // 1-based, as reported
	srv     *bench.Server
	apiKey  string
	authURL string
	// load carries the background load; control everything else (logins,
	// checks, revocations, polls), so that a poll never waits for a
	// connection the load holds.
	load, control *http.Client
}

func newInstance(i int, srv *bench.Server, apiKey string) *instance {
	client := func(conns int) *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = conns, conns
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	return &instance{n: i + 1, srv: srv, apiKey: apiKey, authURL: srv.URL + "/v1/auth", load: client(256), control: client(64)}
}

// auth sends GET /v1/auth with token as a bearer and returns the status.
func (in *instance) auth(ctx context.Context, c *http.Client, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.authURL, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Sessioncache-Key", in.apiKey)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// call sends an API request and decodes a JSON answer into out; it returns
// the status. body is JSON unless form is set.
func (in *instance) call(ctx context.Context, method, path, body string, form bool, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, in.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	if form {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req.Header.Set("X-Sessioncache-Key", in.apiKey)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	resp, err := in.control.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %d %q: %w", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, nil
}

// grant is what a login or a refresh answers.
type grant struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	SessionID    string `json:"session_id"`
	Error        string `json:"error"`
	Reason       string `json:"reason"`
}

const clientID = "revprobe"

func (in *instance) login(ctx context.Context, user string) (grant, error) {
	var g grant
	body, _ := json.Marshal(map[string]string{"user_id": user, "client_id": clientID})
	st, err := in.call(ctx, http.MethodPost, "/v1/sessions", string(body), false, &g)
	if err == nil && (st != http.StatusCreated && st != http.StatusOK || g.AccessToken == "" || g.SessionID == "") {
		err = fmt.Errorf("POST /v1/sessions on instance %d: %d %s %s", in.n, st, g.Error, g.Reason)
	}
	return g, err
}

// refresh presents a refresh token at the token endpoint; it returns the
// status and the answer.
func (in *instance) refresh(ctx context.Context, token string) (int, grant, error) {
	var g grant
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}, "client_id": {clientID}}
	st, err := in.call(ctx, http.MethodPost, "/oauth2/token", form.Encode(), true, &g)
	return st, g, err
}

// checks reads the instance's counts of session checks answered from
// memory and from Redis (sessioncache_auth_session_checks_total).
func (in *instance) checks(ctx context.Context) (memory, fromRedis float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.srv.MetricsURL+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := in.control.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "sessioncache_auth_session_checks_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("metrics of instance %d: %q", in.n, line)
		}
		switch labels {
		case `source="memory"`:
			memory, found = v, found+1
		case `source="redis"`:
			fromRedis, found = v, found+1
		}
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("instance %d exports no sessioncache_auth_session_checks_total by source", in.n)
	}
	return memory, fromRedis, nil
}
