package main

// Transport security: the HTTPS listener and its certificate reloads, Redis
// over TLS (trust, client certificates), Redis credentials from files, and
// the refusals of unsafe settings.

import (
	"context"
	"crypto/tls"
	"io"
	"math/big"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

func TestConfigRedisSecurity(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "redis")
	client := ca.issue(t, dir, "client")
	pwFile := writeFile(t, dir, "password", "s3cret-redis-password\n")
	userFile := writeFile(t, dir, "username", "sessioncache\n")
	insecure := map[string]string{envRedisInsecure: "true"}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string // "" for accepted
	}{
		{"password in a flag URL", []string{"-redis-url", "redis://:hunter2hunter2@a:6379/0"}, nil, "-redis-url holds a password, which any local user can read in the process list: give it in a file with SESSIONCACHE_REDIS_PASSWORD_FILE"},
		{"user and password in a flag URL", []string{"-redis-url", "rediss://u:hunter2hunter2@a:6379/0"}, nil, "-redis-url holds a password"},
		{"sentinel master password in a flag URL", []string{"-redis-mode", "sentinel", "-redis-master", "m", "-redis-url", "redis://s1:26379?password=hunter2hunter2"}, nil, "-redis-url holds a password"},
		{"flag URL without a password", []string{"-redis-url", "redis://a:6379/0"}, map[string]string{envRedisPasswordFile: pwFile, envAPIKey: goodKey}, ""},
		{"password in the environment URL", nil, map[string]string{envRedisURL: "redis://:hunter2hunter2@a:6379/0"}, ""},
		{"password twice", nil, map[string]string{envRedisURL: "redis://:hunter2hunter2@a:6379/0", envRedisPasswordFile: pwFile}, "SESSIONCACHE_REDIS_PASSWORD_FILE is set and SESSIONCACHE_REDIS_URL holds a password too"},
		{"user twice", nil, map[string]string{envRedisURL: "redis://someone@a:6379/0", envRedisUsernameFile: userFile, envRedisPasswordFile: pwFile}, "names a user too"},
		{"user without password", nil, map[string]string{envRedisURL: "redis://a:6379/0", envRedisUsernameFile: userFile}, "SESSIONCACHE_REDIS_USERNAME_FILE needs a password"},
		{"missing password file", nil, map[string]string{envRedisURL: "redis://a:6379/0", envRedisPasswordFile: filepath.Join(dir, "nope")}, "SESSIONCACHE_REDIS_PASSWORD_FILE: open"},
		{"empty password file", nil, map[string]string{envRedisURL: "redis://a:6379/0", envRedisPasswordFile: writeFile(t, dir, "empty", "\n")}, "the file is empty"},
		{"skip_verify without leave", nil, map[string]string{envRedisURL: "rediss://a:6379/0?skip_verify=true"}, "skip_verify turns off the verification of Redis's certificate: set SESSIONCACHE_REDIS_TLS_INSECURE_SKIP_VERIFY=true"},
		{"skip_verify=false", nil, map[string]string{envRedisURL: "rediss://a:6379/0?skip_verify=false"}, ""},
		{"skip_verify with leave", nil, map[string]string{envRedisURL: "rediss://a:6379/0?skip_verify=true", envRedisInsecure: "true"}, ""},
		{"skip_verify on plain redis", nil, map[string]string{envRedisURL: "redis://a:6379/0?skip_verify=true"}, "unexpected option: skip_verify"},
		{"CA on plain redis", nil, map[string]string{envRedisURL: "redis://a:6379/0", envRedisCAFile: ca.file}, "need a rediss:// URL"},
		{"insecure on plain redis", nil, map[string]string{envRedisURL: "redis://a:6379/0", envRedisInsecure: "true"}, "need a rediss:// URL"},
		{"TLS settings without Redis", nil, map[string]string{envRedisCAFile: ca.file}, "SESSIONCACHE_REDIS_TLS_CA_FILE is set but SESSIONCACHE_REDIS_URL is not"},
		{"CA file without a certificate", nil, map[string]string{envRedisURL: "rediss://a:6379/0", envRedisCAFile: pwFile}, "no PEM certificate"},
		{"client cert without key", nil, map[string]string{envRedisURL: "rediss://a:6379/0", envRedisCertFile: client.certFile}, "set both SESSIONCACHE_REDIS_TLS_CERT_FILE and SESSIONCACHE_REDIS_TLS_KEY_FILE"},
		{"client key that is not the cert's", nil, map[string]string{envRedisURL: "rediss://a:6379/0", envRedisCertFile: client.certFile, envRedisKeyFile: ca.file}, "Redis client certificate"},
		{"client cert", nil, map[string]string{envRedisURL: "rediss://a:6379/0", envRedisCAFile: ca.file, envRedisCertFile: client.certFile, envRedisKeyFile: client.keyFile}, ""},
		{"HTTPS cert without key", nil, map[string]string{envTLSCertFile: client.certFile}, "set both SESSIONCACHE_TLS_CERT_FILE and SESSIONCACHE_TLS_KEY_FILE"},
		{"HTTPS pair that does not match", nil, map[string]string{envTLSCertFile: client.certFile, envTLSKeyFile: pwFile}, "HTTPS certificate"},
		{"HTTPS", nil, map[string]string{envTLSCertFile: client.certFile, envTLSKeyFile: client.keyFile}, ""},
		{"insecure without a URL", nil, insecure, "SESSIONCACHE_REDIS_TLS_INSECURE_SKIP_VERIFY is set but SESSIONCACHE_REDIS_URL is not"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, envOf(tc.env), io.Discard)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			case err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cret")):
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// The TLS and credential settings reach the client options in every mode,
// and the URL's own TLS choices (server name) are kept.
func TestRedisSecurityEveryMode(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "redis")
	client := ca.issue(t, dir, "client")
	env := map[string]string{
		envRedisCAFile:       ca.file,
		envRedisCertFile:     client.certFile,
		envRedisKeyFile:      client.keyFile,
		envRedisUsernameFile: writeFile(t, dir, "user", "sc-user\n"),
		envRedisPasswordFile: writeFile(t, dir, "pw", "sc-password\n"),
	}
	for _, tc := range []struct{ mode, url, master string }{
		{modeStandalone, "rediss://redis.example:6380/0", ""},
		{modeCluster, "rediss://redis.example:6380,b:6380", ""},
		{modeSentinel, "rediss://redis.example:26379,b:26379/0", "mymaster"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := map[string]string{envRedisMode: tc.mode, envRedisURL: tc.url, envRedisMaster: tc.master}
			for k, v := range env {
				e[k] = v
			}
			c, err := loadConfig(nil, envOf(e), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			o := c.RedisOptions
			var tc2 *tls.Config
			var user, pass string
			switch {
			case o.standalone != nil:
				tc2, user, pass = o.standalone.TLSConfig, o.standalone.Username, o.standalone.Password
			case o.cluster != nil:
				tc2, user, pass = o.cluster.TLSConfig, o.cluster.Username, o.cluster.Password
			case o.sentinel != nil:
				tc2, user, pass = o.sentinel.TLSConfig, o.sentinel.Username, o.sentinel.Password
			}
			if tc2 == nil || tc2.RootCAs == nil || tc2.GetClientCertificate == nil || tc2.InsecureSkipVerify || tc2.ServerName != "redis.example" || tc2.MinVersion != tls.VersionTLS12 {
				t.Errorf("TLS config %+v: want the CA, the client certificate, verification on, server name redis.example", tc2)
			}
			if user != "sc-user" || pass != "sc-password" {
				t.Errorf("credentials %q %q, want those of the files without the newline", user, pass)
			}
			if got := o.tlsState(); got != "on, verified against "+envRedisCAFile {
				t.Errorf("tlsState = %q", got)
			}
		})
	}
}

// tlsRedis starts a redis-server that also listens for TLS on a port of
// its own, with a certificate from ca, and returns that port's address. Its
// plain port serves the test's own checks.
func tlsRedis(t *testing.T, ca *testCA, authClients string, args ...string) (*redistest.Server, string) {
	t.Helper()
	srvCert := ca.issue(t, t.TempDir(), "redis-server")
	port := redistest.FreePort(t)
	srv := redistest.StartServer(t, append([]string{"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", srvCert.certFile, "--tls-key-file", srvCert.keyFile,
		"--tls-ca-cert-file", ca.file, "--tls-auth-clients", authClients}, args...)...)
	return srv, "127.0.0.1:" + strconv.Itoa(port)
}

func readyStatus(base string) int {
	r, err := http.Get(base + "/readyz")
	if err != nil {
		return 0
	}
	r.Body.Close()
	return r.StatusCode
}

// The service reaches a Redis over TLS with the CA file, refuses one whose
// certificate another CA signed, and presents a client certificate to a
// Redis that requires one.
func TestRedisOverTLS(t *testing.T) {
	ca := newTestCA(t, "redis")
	_, addr := tlsRedis(t, ca, "no")
	base := map[string]string{envRedisURL: "rediss://" + addr + "/0", envKeyPrefix: redistest.NewPrefix(), envSecret: randomHex(32), envAPIKey: goodKey}
	with := func(extra map[string]string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}

	t.Run("CA file", func(t *testing.T) {
		p := startService(t, with(map[string]string{envRedisCAFile: ca.file}))
		c := newAPIClient(t, "http://"+p.addr, goodKey)
		poll(t, 10*time.Second, "/readyz 200 over TLS", func() bool { return readyStatus(c.base) == http.StatusOK })
		tok := c.login(alice, "laptop").str("refresh_token")
		c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok))
		if !strings.Contains(p.logs.String(), `"redis_tls":"on, verified against SESSIONCACHE_REDIS_TLS_CA_FILE"`) {
			t.Errorf("the start-up log does not say how Redis's certificate is verified")
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		p := startService(t, with(map[string]string{envRedisCAFile: newTestCA(t, "other").file}))
		poll(t, 10*time.Second, "/readyz 503 and a log that names the certificate", func() bool {
			return readyStatus("http://"+p.addr) == http.StatusServiceUnavailable &&
				strings.Contains(p.logs.String(), "certificate signed by unknown authority")
		})
	})
	t.Run("system CAs", func(t *testing.T) {
		p := startService(t, with(nil))
		poll(t, 10*time.Second, "/readyz 503: the system does not trust the test CA", func() bool {
			return readyStatus("http://"+p.addr) == http.StatusServiceUnavailable &&
				strings.Contains(p.logs.String(), "certificate signed by unknown authority")
		})
	})
	t.Run("skip_verify allowed", func(t *testing.T) {
		p := startService(t, with(map[string]string{envRedisURL: base[envRedisURL] + "?skip_verify=true", envRedisInsecure: "true"}))
		poll(t, 10*time.Second, "/readyz 200 without verification", func() bool { return readyStatus("http://"+p.addr) == http.StatusOK })
		if !strings.Contains(p.logs.String(), `"level":"WARN","msg":"SESSIONCACHE_REDIS_TLS_INSECURE_SKIP_VERIFY=true: Redis's certificate is not verified`) {
			t.Errorf("no warning about the unverified certificate")
		}
	})

	// A one-master cluster whose bus and clients speak TLS: CLUSTER SLOTS
	// over TLS answers the TLS port, so go-redis follows it there.
	t.Run("cluster", func(t *testing.T) {
		srv, addr := tlsRedis(t, ca, "no", "--cluster-enabled", "yes", "--tls-cluster", "yes")
		admin := srv.Client(t)
		ctx := context.Background()
		if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
			t.Fatal(err)
		}
		poll(t, 10*time.Second, "the cluster to be up", func() bool {
			info, _ := admin.ClusterInfo(ctx).Result()
			return strings.Contains(info, "cluster_state:ok")
		})
		env := with(map[string]string{envRedisMode: modeCluster, envRedisURL: "rediss://" + addr, envRedisCAFile: ca.file})
		p := startService(t, env)
		c := newAPIClient(t, "http://"+p.addr, goodKey)
		poll(t, 10*time.Second, "/readyz 200 on the cluster over TLS", func() bool { return readyStatus(c.base) == http.StatusOK })
		tok := c.login(alice, "laptop").str("refresh_token")
		c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok))

		env[envRedisCAFile] = newTestCA(t, "other").file
		wrong := startService(t, env)
		poll(t, 10*time.Second, "/readyz 503 on the cluster with the wrong CA", func() bool {
			return readyStatus("http://"+wrong.addr) == http.StatusServiceUnavailable &&
				strings.Contains(wrong.logs.String(), "certificate signed by unknown authority")
		})
	})

	t.Run("client certificate required", func(t *testing.T) {
		_, mtlsAddr := tlsRedis(t, ca, "yes")
		env := with(map[string]string{envRedisURL: "rediss://" + mtlsAddr + "/0", envRedisCAFile: ca.file})
		without := startService(t, env)
		poll(t, 10*time.Second, "/readyz 503 without a client certificate", func() bool {
			return readyStatus("http://"+without.addr) == http.StatusServiceUnavailable && strings.Contains(without.logs.String(), `"msg":"not ready"`)
		})
		client := ca.issue(t, t.TempDir(), "sessioncache")
		env[envRedisCertFile], env[envRedisKeyFile] = client.certFile, client.keyFile
		p := startService(t, env)
		c := newAPIClient(t, "http://"+p.addr, goodKey)
		poll(t, 10*time.Second, "/readyz 200 with the client certificate", func() bool { return readyStatus(c.base) == http.StatusOK })
		c.login(alice, "laptop")
	})
}

// Credentials come from files: a password alone (requirepass) and an ACL
// user with only the rights the README names (the rules file); a wrong password keeps the
// service unready and says why.
func TestRedisCredentialsFromFiles(t *testing.T) {
	srv := redistest.StartServer(t)
	admin := srv.Client(t)
	ctx := context.Background()
	aclPrefix := redistest.NewPrefix()
	// The rights the README's Security section names, on the prefix.
	acl := []any{"ACL", "SETUSER", "sc-user", "on", ">user-password-0123"}
	for _, r := range aclRulesFor(t, aclPrefix) {
		acl = append(acl, r)
	}
	if err := admin.Do(ctx, acl...).Err(); err != nil {
		t.Fatal(err)
	}
	// The admin connection stays authenticated once the passwords are set.
	if err := admin.Do(ctx, "CONFIG", "SET", "requirepass", "default-password-0123").Err(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cases := []struct {
		name      string
		user, pw  string
		wantReady bool
	}{
		{"ACL user with the rules file's rights", "sc-user", "user-password-0123", true},
		{"requirepass", "", "default-password-0123", true},
		{"wrong password", "sc-user", "not-the-password", false},
		{"no password", "", "", false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{envRedisURL: "redis://" + srv.Addr + "/0", envKeyPrefix: aclPrefix, envAPIKey: goodKey}
			if tc.pw != "" {
				env[envRedisPasswordFile] = writeFile(t, dir, "pw"+strconv.Itoa(i), tc.pw+"\n")
			}
			if tc.user != "" {
				env[envRedisUsernameFile] = writeFile(t, dir, "user"+strconv.Itoa(i), tc.user+"\n")
			}
			p := startService(t, env)
			base := "http://" + p.addr
			if tc.wantReady {
				poll(t, 10*time.Second, "/readyz 200", func() bool { return readyStatus(base) == http.StatusOK })
				c := newAPIClient(t, base, goodKey)
				for _, user := range []string{alice, bob} {
					tok := c.login(user, "laptop").str("refresh_token")
					tok = c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok)).str("refresh_token")
					c.must(http.StatusOK, "GET", "/v1/users/"+user+"/sessions", "")
					c.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(tok))
					c.must(http.StatusOK, "DELETE", "/v1/users/"+user+"/sessions", "")
				}
			} else {
				poll(t, 10*time.Second, "/readyz 503 with the reason in the log", func() bool {
					logs := p.logs.String()
					return readyStatus(base) == http.StatusServiceUnavailable && (strings.Contains(logs, "WRONGPASS") || strings.Contains(logs, "NOAUTH"))
				})
			}
			if tc.pw != "" && strings.Contains(p.logs.String(), tc.pw) {
				t.Errorf("the log shows the password")
			}
		})
	}
}

// The HTTPS listener serves the configured certificate, picks up a
// replaced one without a restart, keeps the last good one when the files
// turn bad (on a change and on SIGHUP), and -check speaks HTTPS.
func TestHTTPSListener(t *testing.T) {
	ca := newTestCA(t, "service")
	dir := t.TempDir()
	first := ca.issue(t, dir, "service")
	p := startService(t, map[string]string{envTLSCertFile: first.certFile, envTLSKeyFile: first.keyFile})
	base := "https://" + p.addr
	served := func() *big.Int {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: first.pool}, DisableKeepAlives: true}}
		r, err := c.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz over HTTPS: %v", err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz over HTTPS: %d", r.StatusCode)
		}
		return r.TLS.PeerCertificates[0].SerialNumber
	}
	if got := served(); got.Cmp(first.serial) != 0 {
		t.Fatalf("serves certificate %x, want %x", got, first.serial)
	}
	if r, err := http.Get("http://" + p.addr + "/healthz"); err == nil {
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP on the HTTPS listener answered 200")
		}
	}
	check := exec.Command(serviceBinary(t), "-check", "/healthz", "-listen", p.addr)
	check.Env = []string{envTLSCertFile + "=" + first.certFile, envTLSKeyFile + "=" + first.keyFile}
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("-check over HTTPS: %v %s", err, out)
	}

	// A certificate manager replaces both files.
	second := ca.issue(t, dir, "service")
	poll(t, 10*time.Second, "the replaced certificate to be served", func() bool { return served().Cmp(second.serial) == 0 })

	// A bad pair (a truncated certificate) is refused; the last good one stays.
	loaded := strings.Count(p.logs.String(), `"msg":"HTTPS certificate not reloaded`)
	writeAtomically(t, second.certFile, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n"))
	poll(t, 10*time.Second, "the bad certificate to be refused in the log", func() bool {
		served()
		return strings.Count(p.logs.String(), `"msg":"HTTPS certificate not reloaded`) > loaded
	})
	if got := served(); got.Cmp(second.serial) != 0 {
		t.Errorf("after a bad certificate: serves %x, want the last good one %x", got, second.serial)
	}
	loaded = strings.Count(p.logs.String(), `"msg":"HTTPS certificate not reloaded`)
	p.cmd.Process.Signal(syscall.SIGHUP)
	poll(t, 10*time.Second, "SIGHUP to try the bad certificate again", func() bool {
		return strings.Count(p.logs.String(), `"msg":"HTTPS certificate not reloaded`) > loaded
	})
	if got := served(); got.Cmp(second.serial) != 0 {
		t.Errorf("after SIGHUP with a bad certificate: serves %x, want %x", got, second.serial)
	}
	third := ca.issue(t, dir, "service")
	p.cmd.Process.Signal(syscall.SIGHUP)
	poll(t, 10*time.Second, "the fixed certificate to be served", func() bool { return served().Cmp(third.serial) == 0 })
	select {
	case <-p.done:
		t.Fatalf("the service exited: %v", p.Err())
	default:
	}
}
