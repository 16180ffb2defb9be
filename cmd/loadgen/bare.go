package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sessioncache/sessioncache/bench"
)

// newBare returns the operation of -target bare: one request to the bare
// handler of bench/bare (one go-redis SET per request), the ceiling of the
// service. It sends what a rotation sends to the service: a POST of a JSON
// body of the same shape and size (a token-sized placeholder, the refresh's
// IP address and user agent) with the same headers, over up to conns
// keep-alive connections. Anything but a 200 is an error.
// newBareAuth sends bench/bare -headers what a gateway sends /v1/auth: a
// GET with a bearer token of an access token's length and the API key.
func newBareAuth(base, apiKey string, conns int) func(context.Context) error {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	endpoint := strings.TrimRight(base, "/") + "/v1/auth"
	bearer := "Bearer eyJ" + strings.Repeat("x", 560)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", bearer)
		if apiKey != "" {
			req.Header.Set("X-Sessioncache-Key", apiKey)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Auth-User-Id") == "" {
			return fmt.Errorf("GET %s: %s", endpoint, resp.Status)
		}
		return nil
	}
}

func newBare(base, apiKey string, conns int) func(context.Context) error {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	endpoint := strings.TrimRight(base, "/") + "/"
	body, _ := json.Marshal(map[string]string{
		"refresh_token": "sct_" + strings.Repeat("x", 131), "device_id": "",
		"ip_address": bench.Refresh.IPAddress, "user_agent": bench.Refresh.UserAgent,
	})
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		if apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+apiKey)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST %s: %s", endpoint, resp.Status)
		}
		return nil
	}
}

// cpuTime returns the CPU time (user and system, all threads) the process
// pid has used so far, from /proc/<pid>/stat (Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// count the fields after its closing one. utime and stime are fields 14
	// and 15, in clock ticks.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("/proc/" + strconv.Itoa(pid) + "/stat: unexpected format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("/proc/" + strconv.Itoa(pid) + "/stat: unexpected format")
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go runs on.
const clockTicks = 100
