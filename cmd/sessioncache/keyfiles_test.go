package main

// Key files and certificates re-read when they change on disk, as the
// kubelet rewrites a mounted Secret in a running pod: no SIGHUP (the image
// has no kill), no restart.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/redisstore"
)

// secretVolume lays files out as the kubelet mounts a Secret: each name is
// a symbolic link through ..data to a folder of the current version, and
// an update writes a new folder and swaps ..data to it in one rename.
type secretVolume struct {
	t       *testing.T
	dir     string
	version int
}

func newSecretVolume(t *testing.T, files map[string]string) *secretVolume {
	v := &secretVolume{t: t, dir: t.TempDir()}
	v.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) path(name string) string { return filepath.Join(v.dir, name) }

// update writes every file of the next version and swaps ..data to it.
// The files of a version all get the same modification time, that of the
// first version, so that only the swap tells the change.
func (v *secretVolume) update(files map[string]string) {
	v.t.Helper()
	v.version++
	folder := fmt.Sprintf("..2026_01_01_00_00_00.%09d", v.version)
	if err := os.Mkdir(filepath.Join(v.dir, folder), 0o755); err != nil {
		v.t.Fatal(err)
	}
	stamp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, text := range files {
		p := filepath.Join(v.dir, folder, name)
		if err := os.WriteFile(p, []byte(text), 0o400); err != nil {
			v.t.Fatal(err)
		}
		if err := os.Chtimes(p, stamp, stamp); err != nil {
			v.t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(folder, tmp); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		v.t.Fatal(err)
	}
}

// The reloader reads a new key file (a ..data swap, a file created anew)
// once it has stood still for a look (a file written in place is refused:
// keyreload_test.go); a file that does not load changes nothing and is
// logged once; requests go on with the keys in force.
func TestKeyFilesReloadedWhenChanged(t *testing.T) {
	k1, k2, k3 := "1 "+secretB64('a'), "2 "+secretB64('b'), "3 "+secretB64('c')
	a1, a2, a3 := "gateway-a-0123456789", "gateway-b-0123456789", "gateway-c-0123456789"
	vol := newSecretVolume(t, map[string]string{"signing-keys": k1 + "\n", "api-keys": a1 + "\n"})
	cfg, err := loadConfig(nil, envOf(map[string]string{
		envSecret: goodSecret, envSigningKeysFile: vol.path("signing-keys"), envAPIKeysFile: vol.path("api-keys"),
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	e := newTestEnv(t, func(s *envSetup) {
		s.server.apiKeys = cfg.APIKeys
		s.store.Keys = cfg.SigningKeys
	})
	opt := redisstore.Options{Secret: testSecret, KeyPrefix: e.b.Prefix, Keys: cfg.SigningKeys}
	rl := newReloader(cfg, e.srv, e.b.Client, opt, log)

	signer := func() int {
		t.Helper()
		g, err := e.srv.store().Issue(context.Background(), alice, redisstore.Client{})
		if err != nil {
			t.Fatal(err)
		}
		return tokenKeyID(g.Token)
	}
	accepted := func(key string) bool { return validAPIKey(*e.srv.apiKeys.Load(), key) }
	state := func() string {
		var keys []string
		for _, k := range []string{a1, a2, a3} {
			if accepted(k) {
				keys = append(keys, k[:9])
			}
		}
		return fmt.Sprintf("signing key %d, API keys %v", signer(), keys)
	}
	expect := func(what, want string) {
		t.Helper()
		if got := state(); got != want {
			t.Fatalf("%s: %s, want %s\n%s", what, got, want, logs)
		}
	}
	count := func(msg string) int { return strings.Count(logs.String(), `"msg":"`+msg+`"`) }

	rl.checkFiles()
	expect("unchanged files", "signing key 1, API keys [gateway-a]")

	// The kubelet swaps ..data: a new file behind the same name, with the
	// same size and time. It is read at the second look.
	vol.update(map[string]string{"signing-keys": k2 + "\n" + k1 + "\n", "api-keys": a1 + "\n" + a2 + "\n"})
	rl.checkFiles()
	expect("at the first look after a change", "signing key 1, API keys [gateway-a]")
	rl.checkFiles()
	expect("at the second look", "signing key 2, API keys [gateway-a gateway-b]")
	if count("signing keys reloaded") != 1 || count("API keys reloaded") != 1 || !strings.Contains(logs.String(), `"cause":"changed"`) {
		t.Errorf("want one reload of each, caused by a change:\n%s", logs)
	}

	// Created anew and written slowly: not read while it changes between
	// looks.
	api := vol.path("api-keys")
	if err := os.Remove(api); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(api, []byte(a2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rl.checkFiles()
	if err := os.WriteFile(api, []byte(a2+"\n"+a3+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rl.checkFiles()
	expect("while the file is being written", "signing key 2, API keys [gateway-a gateway-b]")
	rl.checkFiles()
	expect("once it stood still", "signing key 2, API keys [gateway-b gateway-c]")

	// A file that does not load changes nothing, and is logged once.
	vol.update(map[string]string{"signing-keys": "3 short\n"})
	for range 4 {
		rl.checkFiles()
	}
	expect("a malformed signing keys file", "signing key 2, API keys [gateway-b gateway-c]")
	if n := count("signing keys not reloaded: keeping the previous ones"); n != 1 {
		t.Errorf("a malformed file logged %d times, want once:\n%s", n, logs)
	}
	// A file removed: the same.
	if err := os.Remove(api); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		rl.checkFiles()
	}
	expect("a removed API keys file", "signing key 2, API keys [gateway-b gateway-c]")
	if n := count("API keys not reloaded: keeping the previous ones"); n != 1 {
		t.Errorf("a removed file logged %d times, want once:\n%s", n, logs)
	}
	// Fixed: both load again.
	vol.update(map[string]string{"signing-keys": k3 + "\n" + k2 + "\n"})
	if err := os.WriteFile(api, []byte(a3+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rl.checkFiles()
	rl.checkFiles()
	expect("fixed files", "signing key 3, API keys [gateway-c]")

	// SIGHUP reads at once, changed or not, and the next looks see nothing
	// new.
	before := count("signing keys reloaded")
	rl.reload()
	rl.checkFiles()
	rl.checkFiles()
	if n := count("signing keys reloaded") - before; n != 1 || !strings.Contains(logs.String(), `"cause":"hangup"`) {
		t.Errorf("SIGHUP and two looks: %d reloads, want 1 caused by the hangup:\n%s", n, logs)
	}
	for _, secret := range []string{secretB64('a'), secretB64('b'), secretB64('c'), a1, a2, a3} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log shows a key")
		}
	}
}

// The binary picks up key files the kubelet rewrites, with no signal: a
// new API key and a new signing key take effect, and sessions carry on.
func TestKeyFilesReloadedByTheService(t *testing.T) {
	k1, k2 := "1 "+randomB64(32), "2 "+randomB64(32)
	a1, a2 := "gateway-a-"+randomHex(16), "gateway-b-"+randomHex(16)
	vol := newSecretVolume(t, map[string]string{"signing-keys": k1 + "\n", "api-keys": a1 + "\n"})
	p := startService(t, map[string]string{
		envSecret:          randomHex(32),
		envSigningKeysFile: vol.path("signing-keys"),
		envAPIKeysFile:     vol.path("api-keys"),
	})
	c := newAPIClient(t, "http://"+p.addr, a1)
	g := c.login("auth0|"+randomHex(8), "laptop")
	if id := tokenKeyID(g.str("refresh_token")); id != 1 {
		t.Fatalf("first token signed by key %d, want 1", id)
	}
	auth := func(key, tok string) int {
		return c.send("GET", "/v1/auth", "", http.Header{apiKeyHeader: {key}, "Authorization": {"Bearer " + tok}}).status
	}

	vol.update(map[string]string{"signing-keys": k2 + "\n" + k1 + "\n", "api-keys": a2 + "\n"})
	poll(t, 20*time.Second, "the new API key to be accepted", func() bool { return auth(a2, g.str("access_token")) == http.StatusOK })
	if s := auth(a1, g.str("access_token")); s != http.StatusForbidden {
		t.Errorf("the removed API key: /v1/auth %d, want 403", s)
	}
	c.apiKey = a2
	tok, at := g.str("refresh_token"), ""
	poll(t, 20*time.Second, "key 2 to sign", func() bool {
		r := c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(tok))
		tok, at = r.str("refresh_token"), r.str("access_token")
		return tokenKeyID(tok) == 2
	})
	if s := auth(a2, at); s != http.StatusOK {
		t.Errorf("the session after the change: /v1/auth %d, want 200", s)
	}
	for _, l := range logLines(p.logs.String()) {
		if l["msg"] == "signing keys reloaded" && l["cause"] != "changed" || l["msg"] == "received hangup: re-reading keys and certificates" {
			t.Errorf("a reload not caused by the change: %v", l)
		}
	}
}

// A change shows in a stat however the file changed, but for a write in
// place that keeps its size and puts its time back.
func TestFileStateSeesReplacements(t *testing.T) {
	vol := newSecretVolume(t, map[string]string{"f": "one\n"})
	f := vol.path("f")
	first := statFile(f)
	if !first.same(statFile(f)) {
		t.Fatal("a file that did not change is not the same")
	}
	vol.update(map[string]string{"f": "two\n"}) // same size, same time
	swapped := statFile(f)
	if swapped.same(first) {
		t.Error("a ..data swap to a file of the same size and time looks the same")
	}
	plain := filepath.Join(t.TempDir(), "g")
	writeAtomically(t, plain, []byte("one\n"))
	before := statFile(plain)
	writeAtomically(t, plain, []byte("two\n"))
	renamed := statFile(plain)
	if err := os.Chtimes(plain, before.info.ModTime(), before.info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if statFile(plain).same(before) || renamed.same(before) {
		t.Error("a file renamed into place looks the same")
	}
	if err := os.WriteFile(plain, []byte("three\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if statFile(plain).same(renamed) {
		t.Error("a file written in place to another size looks the same")
	}
	if err := os.Remove(plain); err != nil {
		t.Fatal(err)
	}
	gone := statFile(plain)
	if gone.same(renamed) || !gone.same(statFile(plain)) {
		t.Error("a removed file: want a change, then no change")
	}
}

// tlsSecret is the data of a Kubernetes TLS Secret holding l.
func tlsSecret(t *testing.T, l leaf) map[string]string {
	files := map[string]string{}
	for name, file := range map[string]string{"tls.crt": l.certFile, "tls.key": l.keyFile} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	return files
}

// The HTTPS certificate in a Secret volume: the kubelet's swap of ..data is
// picked up at a handshake, with no signal.
func TestHTTPSCertificateFromSecretVolume(t *testing.T) {
	ca := newTestCA(t, "service")
	issued := t.TempDir()
	first := ca.issue(t, issued, "first")
	vol := newSecretVolume(t, tlsSecret(t, first))
	p := startService(t, map[string]string{envTLSCertFile: vol.path("tls.crt"), envTLSKeyFile: vol.path("tls.key")})
	served := func() *big.Int {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: first.pool}, DisableKeepAlives: true}}
		r, err := c.Get("https://" + p.addr + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz over HTTPS: %v", err)
		}
		r.Body.Close()
		return r.TLS.PeerCertificates[0].SerialNumber
	}
	if got := served(); got.Cmp(first.serial) != 0 {
		t.Fatalf("serves certificate %x, want %x", got, first.serial)
	}
	second := ca.issue(t, issued, "second")
	vol.update(tlsSecret(t, second))
	poll(t, 10*time.Second, "the renewed certificate to be served", func() bool { return served().Cmp(second.serial) == 0 })
}

// Redis's client certificate in a Secret volume: a renewed pair is what the
// next connection to Redis presents.
func TestRedisClientCertificateFromSecretVolume(t *testing.T) {
	ca := newTestCA(t, "redis")
	issued := t.TempDir()
	first := ca.issue(t, issued, "first")
	vol := newSecretVolume(t, tlsSecret(t, first))
	c, err := loadConfig(nil, envOf(map[string]string{
		envRedisURL: "rediss://redis.example:6379/0", envRedisCAFile: ca.file,
		envRedisCertFile: vol.path("tls.crt"), envRedisKeyFile: vol.path("tls.key"),
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	presented := func() *big.Int {
		t.Helper()
		cert, err := c.RedisOptions.standalone.TLSConfig.GetClientCertificate(&tls.CertificateRequestInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return cert.Leaf.SerialNumber
	}
	if got := presented(); got.Cmp(first.serial) != 0 {
		t.Fatalf("presents %x, want %x", got, first.serial)
	}
	second := ca.issue(t, issued, "second")
	vol.update(tlsSecret(t, second))
	c.RedisTLS.clientCert.nextCheck.Store(0) // the files are looked at once a second at most
	if got := presented(); got.Cmp(second.serial) != 0 {
		t.Errorf("after the kubelet's update: presents %x, want the new %x", got, second.serial)
	}
}
