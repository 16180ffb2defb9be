package deploytest

// Every overlay's pods run by the kubelet emulation (internal/kubelet):
// the service's and Redis's, as the rendered manifests describe them, then
// disrupted the way each overlay is built to survive.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/deploytest/internal/kubelet"
	"github.com/sessioncache/sessioncache/internal/servicetest"
)

// cluster is a node that runs an overlay: the kubelet, and the overlay's
// objects.
type cluster struct {
	*kubelet.Kubelet
	m *manifests
}

func newKubelet(t *testing.T, m *manifests, secrets map[string]map[string]string) *cluster {
	return &cluster{Kubelet: kubelet.New(t, m.services, m.configMaps, secrets), m: m}
}

// testSecrets are the Secrets an operator creates, as the README says.
func testSecrets() map[string]map[string]string {
	return map[string]map[string]string{"sessioncache": {
		"api-keys":                "0123456789abcdef0123456789abcdef\n",
		"secret":                  "fedcba9876543210fedcba9876543210",
		"redis-username":          "sessioncache",
		"redis-password":          "5ecret-redis-password-0123456789",
		"redis-internal-password": "1nternal-redis-password-01234567",
	}}
}

// scanLines returns the lines of s that contain sub.
func scanLines(s, sub string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return out
}

// describe says how a file is owned, for failure messages.
func describe(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%s %d:%d", fi.Mode(), st.Uid, st.Gid)
}

// Every overlay run as its manifests describe, Redis included: the Redis
// StatefulSets with their own configuration and start scripts, the
// cluster's Job, and the service's pod, which must read its secrets, reach
// Redis by the names the overlay gives it, pass its probes, serve the API
// with the key of the Secret, and report the image's version and the
// GOMEMLIMIT and GOMAXPROCS its resources give. Then each overlay's Redis
// is disrupted the way it is built to survive: the in-namespace Redis pod
// replaced (sessions kept on its volume), the Sentinel master's pod
// deleted (failover, and the old master back as a replica), every cluster
// node replaced at once at new addresses. Last, SIGTERM: the service drains
// and exits 0 within its grace period.
func TestKubeletRunsEveryOverlay(t *testing.T) {
	kubelet.RequireRoot(t)
	img := buildImage(t)
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			t.Parallel()
			m := renderDir(t, filepath.Join(kubernetesDir, "overlays", overlay))
			k := newKubelet(t, m, testSecrets())
			switch overlay {
			case "in-namespace":
				runInNamespace(t, k, img)
			case "external":
				runExternal(t, k, img)
			case "sentinel":
				runSentinel(t, k, img)
			case "cluster":
				runCluster(t, k, img)
			default:
				t.Fatalf("overlay %s: add it to this test", overlay)
			}
		})
	}
}

// service is the service's pod, serving.
type service struct {
	k    *cluster
	pod  *kubelet.Pod
	c    *kubelet.Container
	base string
	api  *apiClient
}

// runService runs the Deployment's pod and checks it serves: its probes,
// a login, forward auth with its access token, a rotation, a refresh at
// the token endpoint its issuer names, a revocation that forward auth
// honours, and its metrics.
func runService(t *testing.T, k *cluster, img *dockerImage) *service {
	t.Helper()
	if len(k.m.deployments) != 1 {
		t.Fatalf("want one Deployment, got %d", len(k.m.deployments))
	}
	d := k.m.deployments[0]
	p := k.Run(kubelet.DeploymentPod(d, &img.Image))
	k.WaitReady(p, time.Minute)
	c := p.Containers[0]
	port, err := kubelet.ContainerPort(c.Spec, c.Spec.ReadinessProbe.HTTPGet.Port.String())
	if err != nil {
		t.Fatal(err)
	}
	s := &service{k: k, pod: p, c: c, base: "http://" + net.JoinHostPort(p.IP, strconv.Itoa(port))}
	if code := status(s.base + c.Spec.ReadinessProbe.HTTPGet.Path); code != http.StatusOK {
		t.Fatalf("%s answers %d once ready, want 200", c.Spec.ReadinessProbe.HTTPGet.Path, code)
	}
	key, _, _ := strings.Cut(k.Secrets["sessioncache"]["api-keys"], "\n")
	s.api = newAPIClient(t, s.base, key)
	tok := s.api.login(alice, "laptop")
	s.api.checkForwardAuth(tok, alice)
	next := s.api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok.str("refresh_token")))
	s.checkIssuer(t, next.str("refresh_token"))
	// Where the overlay waits for a replica on revocations
	// (SESSIONCACHE_REVOCATION_REPLICAS), its topology must have one. On a
	// loaded machine the acknowledgement can take longer than the
	// replication timeout: the service then answers 503 not_replicated
	// (applied, retry), and the retry waits again.
	kubelet.WaitFor(t, 30*time.Second, 50*time.Millisecond, "a revocation (acknowledged by a replica where the overlay waits for one)", func() error {
		r := s.api.do("DELETE", "/v1/users/"+alice+"/sessions/"+tok.str("session_id"), "")
		switch {
		case r.status == http.StatusOK:
			return nil
		case r.status == http.StatusServiceUnavailable && strings.Contains(r.raw, "acknowledged"):
			return fmt.Errorf("%d %s", r.status, r.raw)
		}
		t.Fatalf("revocation: %d %s", r.status, r.raw)
		return nil
	})
	s.refuses(t, tok.str("access_token"))
	mport, err := kubelet.ContainerPort(c.Spec, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	s.api.metrics = "http://" + net.JoinHostPort(p.IP, strconv.Itoa(mport))
	metrics := s.api.scrape()
	wantVersion := `version="` + img.version + `"`
	if lines := scanLines(metrics, "sessioncache_build_info{"); len(lines) != 1 || !strings.Contains(lines[0], wantVersion) || !strings.HasSuffix(lines[0], " 1") {
		t.Errorf("build info %q, want %s: the image's version", lines, wantVersion)
	}
	memLimit, err := parseGoMemLimit(c.Env["GOMEMLIMIT"])
	if err != nil {
		t.Fatalf("GOMEMLIMIT=%q: %v", c.Env["GOMEMLIMIT"], err)
	}
	for name, want := range map[string]string{
		"go_gc_gomemlimit_bytes":      strconv.FormatInt(memLimit, 10),
		"go_sched_gomaxprocs_threads": c.Env["GOMAXPROCS"],
	} {
		lines := scanLines(metrics, name+" ")
		if len(lines) != 1 {
			// The Go collector shows them only with its runtime/metrics
			// option; the runtime took the values anyway (a malformed
			// GOMEMLIMIT stops it at start).
			t.Logf("/metrics has no %s to compare with %s", name, want)
			continue
		}
		f, _ := strconv.ParseFloat(strings.Fields(lines[0])[1], 64)
		if strconv.FormatFloat(f, 'f', -1, 64) != want {
			t.Errorf("%s = %s, want %s (from the pod's resources)", name, strings.Fields(lines[0])[1], want)
		}
	}
	return s
}

// untilServes retries a login, a rotation and a forward auth with the new
// access token (and a revocation, which waits for a replica, where revoke
// is set) until they succeed: the service has found its Redis again. Where
// revoke is set, forward auth must then refuse the revoked session's access
// token: the revocation reaches it over the revocation feed, subscribed
// again, or from Redis while it is not.
func (s *service) untilServes(t *testing.T, d time.Duration, revoke bool) {
	t.Helper()
	var access string
	kubelet.WaitFor(t, d, 100*time.Millisecond, "the service to serve again", func() error {
		r := s.api.do("POST", "/v1/sessions", loginBody(bob, "phone"))
		if r.status != http.StatusCreated {
			return fmt.Errorf("login: %d %s", r.status, r.raw)
		}
		r2 := s.api.do("POST", "/v1/tokens/rotate", refreshBody(r.str("refresh_token")))
		if r2.status != http.StatusOK {
			return fmt.Errorf("rotation: %d %s", r2.status, r2.raw)
		}
		access = r2.str("access_token")
		if r3 := s.api.forwardAuth(access); r3.status != http.StatusOK {
			return fmt.Errorf("forward auth: %d %s", r3.status, r3.raw)
		}
		if revoke {
			if r3 := s.api.do("DELETE", "/v1/users/"+bob+"/sessions/"+r.str("session_id"), ""); r3.status != http.StatusOK {
				return fmt.Errorf("revocation: %d %s", r3.status, r3.raw)
			}
		}
		return nil
	})
	if revoke {
		s.refuses(t, access)
	}
}

// refuses waits until forward auth refuses the access token of a revoked
// session (401 revoked): a revocation takes effect at once, not at the
// token's exp, but reaches the memory of forward auth over the revocation
// feed, in milliseconds, hence the deadline.
func (s *service) refuses(t *testing.T, access string) {
	t.Helper()
	kubelet.WaitFor(t, 10*time.Second, 10*time.Millisecond, "forward auth to refuse a revoked session", func() error {
		switch r := s.api.forwardAuth(access); {
		case r.status == http.StatusUnauthorized && r.str("reason") == "revoked":
			return nil
		case r.status == http.StatusOK || r.status == http.StatusServiceUnavailable:
			return fmt.Errorf("%d %s", r.status, r.raw)
		default:
			t.Fatalf("forward auth of a revoked session: %d %s, want 401 revoked", r.status, r.raw)
			return nil
		}
	})
}

// checkIssuer follows the issuer the Deployment sets (SESSIONCACHE_ISSUER)
// as a client in the cluster would, through the cluster's DNS: its
// metadata (RFC 8414) must name that issuer, its jwks_uri serve the access
// tokens' keys, and its token_endpoint refresh tok as a public client
// (RFC 6749 section 6), with an access token forward auth admits.
func (s *service) checkIssuer(t *testing.T, tok string) {
	t.Helper()
	issuer := s.c.Env[settingEnv(t, "issuer")]
	if issuer == "" {
		t.Fatalf("the Deployment sets no %s", settingEnv(t, "issuer"))
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: s.k.Net.Dial}}
	get := func(u string, into any) {
		t.Helper()
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s through the cluster's DNS: %v", u, err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d, %v", u, resp.StatusCode, err)
		}
	}
	var meta struct {
		Issuer        string `json:"issuer"`
		JWKSURI       string `json:"jwks_uri"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	get(strings.TrimSuffix(issuer, "/")+"/.well-known/oauth-authorization-server", &meta)
	if meta.Issuer != issuer {
		t.Errorf("the metadata names the issuer %q, want %q", meta.Issuer, issuer)
	}
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	get(meta.JWKSURI, &jwks)
	if len(jwks.Keys) == 0 {
		t.Errorf("%s holds no key", meta.JWKSURI)
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}, "client_id": {clientID}}
	resp, err := client.PostForm(meta.TokenEndpoint, form)
	if err != nil {
		t.Fatalf("POST %s: %v", meta.TokenEndpoint, err)
	}
	defer resp.Body.Close()
	var grant map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&grant); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %v, %v", meta.TokenEndpoint, resp.StatusCode, grant, err)
	}
	s.api.checkForwardAuth(response{body: grant}, alice)
}

// rotates waits until a token issued before a disruption rotates: the
// session survived it.
func (s *service) rotates(t *testing.T, d time.Duration, tok string) string {
	t.Helper()
	var next string
	kubelet.PollEvery(t, d, 100*time.Millisecond, "the session from before to rotate", func() bool {
		r := s.api.do("POST", "/v1/tokens/rotate", refreshBody(tok))
		switch r.status {
		case http.StatusOK:
			next = r.str("refresh_token")
			return true
		case http.StatusServiceUnavailable:
			return false
		}
		t.Fatalf("rotating the token from before: %d %s: the session was lost", r.status, r.raw)
		return false
	})
	return next
}

// stop sends SIGTERM, as the kubelet does: the service drains and exits
// 0 within the grace period.
func (s *service) stop(t *testing.T) {
	t.Helper()
	grace := time.Duration(*s.pod.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if !s.c.Terminate(grace) {
		t.Fatalf("the service did not exit within %v of SIGTERM", grace)
	}
	if code, _ := s.c.Exited(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

// aclRules are the rules of the base's ConfigMap sessioncache-redis-acl,
// one a string.
func aclRules(t *testing.T, k *cluster) []string {
	t.Helper()
	var out []string
	for _, cm := range k.m.configMaps {
		if strings.HasPrefix(cm.Name, "sessioncache-redis-acl") {
			for _, line := range strings.Split(cm.Data["rules"], "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					out = append(out, line)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("the overlay holds no ConfigMap sessioncache-redis-acl with rules")
	}
	return out
}

// redisClient connects the test to a Redis pod as the service does: its
// ACL user and password, from the Secret.
func (k *cluster) redisClient(t *testing.T, addr string) *redis.Client {
	s := k.Secrets["sessioncache"]
	c := redis.NewClient(&redis.Options{Addr: addr, Username: s["redis-username"], Password: s["redis-password"], Dialer: k.Net.Dial, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// internalClient connects the test to a Redis pod as its user "internal"
// (replication, Sentinel, the cluster's Job).
func (k *cluster) internalClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Username: "internal", Password: k.Secrets["sessioncache"]["redis-internal-password"], Dialer: k.Net.Dial, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// checkRedisPod checks a running Redis pod is the token store its
// redis.conf describes: noeviction, an append-only file on its data
// volume, bound to its pod's address only; and that it admits only its
// ACL users: the default user is off (neither no password nor the
// service's password logs in as it), and the service's user may run
// nothing but its rules (no CONFIG, no FLUSHALL, no key outside its
// prefix).
func checkRedisPod(t *testing.T, k *cluster, p *kubelet.Pod) {
	t.Helper()
	c := k.redisClient(t, net.JoinHostPort(p.IP, "6379"))
	info, err := c.Info(t.Context(), "memory", "persistence").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "maxmemory_policy:noeviction\r\n") || !strings.Contains(info, "aof_enabled:1\r\n") {
		t.Errorf("%s: want maxmemory_policy:noeviction and aof_enabled:1 in\n%s", p.Name, info)
	}
	conf, err := os.ReadFile(filepath.Join(p.Container(t, "redis").Mounts["/run/redis"], "redis.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if bind := regexp.MustCompile(`(?m)^bind (.*)$`).FindStringSubmatch(string(conf)); bind == nil || bind[1] != p.IP {
		t.Errorf("%s: redis.conf binds %q, want the pod's address %s", p.Name, bind, p.IP)
	}
	anon := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(p.IP, "6379"), MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(t.Context()).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("%s answers without the password: %v", p.Name, err)
	}
	asDefault := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(p.IP, "6379"), Password: k.Secrets["sessioncache"]["redis-password"], Dialer: k.Net.Dial, MaxRetries: -1})
	defer asDefault.Close()
	if err := asDefault.Ping(t.Context()).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("%s: the default user logs in with the service's password (%v): want it off", p.Name, err)
	}
	for _, args := range [][]any{{"config", "get", "maxmemory"}, {"flushall"}, {"set", "outside-the-prefix", "1"}, {"keys", "*"}} {
		if err := c.Do(t.Context(), args...).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%s: the service's user may run %v (%v): want NOPERM", p.Name, args, err)
		}
	}
	// The append-only file is on the data volume: Redis (user 999) can
	// write the claim the kubelet gave to fsGroup.
	data := p.Container(t, "redis").Mounts["/data"]
	kubelet.PollEvery(t, 10*time.Second, 10*time.Millisecond, "the append-only file on the data volume of "+p.Name, func() bool {
		_, err := os.Stat(filepath.Join(data, "appendonlydir"))
		return err == nil
	})
}

// in-namespace: the StatefulSet's Redis; then its pod replaced, at a new
// address: the service finds it by its Service's name, the session is
// still there (append-only file on the claim), and forward auth honours a
// revocation made after the replacement.
func runInNamespace(t *testing.T, k *cluster, img *dockerImage) {
	if len(k.m.statefulSets) != 1 {
		t.Fatalf("want one Redis StatefulSet, got %d", len(k.m.statefulSets))
	}
	sts := k.m.statefulSets[0]
	redisPods := k.RunStatefulSet(sts)
	checkRedisPod(t, k, redisPods[0])
	s := runService(t, k, img)
	tok := s.api.login(alice, "tablet").str("refresh_token")
	tok = s.api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok)).str("refresh_token")

	old := redisPods[0].IP
	k.Delete(redisPods[0])
	kubelet.PollEvery(t, 30*time.Second, 50*time.Millisecond, "/readyz 503 without Redis", func() bool { return status(s.base+"/readyz") == http.StatusServiceUnavailable })
	p := k.Run(kubelet.StatefulSetPod(sts, 0))
	if p.IP == old {
		t.Fatal("the new Redis pod has the old address")
	}
	k.WaitReady(p, time.Minute)
	s.rotates(t, time.Minute, tok)
	// The revocation feed's subscription died with the pod: forward auth
	// must still honour a revocation on the new one.
	s.untilServes(t, time.Minute, true)
	s.stop(t)
}

// external: a managed Redis outside the cluster, at the address of
// redis-endpoint.env, with TLS (a certificate for that name, from the CA
// of the ConfigMap the overlay mounts) and a password.
func runExternal(t *testing.T, k *cluster, img *dockerImage) {
	env := readEnvFile(t, filepath.Join(kubernetesDir, "overlays", "external", "redis-endpoint.env"))
	host, port := env["REDIS_HOST"], env["REDIS_PORT"]
	ip := k.Net.Allocate()
	k.Net.Publish(ip, host)
	dir := t.TempDir()
	cert := issueServerCert(t, dir, host)
	// A managed Redis whose operator gave the service's user the rules
	// the base holds, and turned the default user off.
	user, password := k.Secrets["sessioncache"]["redis-username"], k.Secrets["sessioncache"]["redis-password"]
	args := []string{"--port", "0", "--bind", ip, "--tls-port", port,
		"--tls-cert-file", cert.certFile, "--tls-key-file", cert.keyFile, "--tls-ca-cert-file", cert.caFile, "--tls-auth-clients", "no",
		"--maxmemory-policy", "noeviction", "--save", "", "--appendonly", "no", "--dir", dir,
		"--user", "default", "off", "--user", user, "on", ">" + password}
	srv := exec.Command("redis-server", append(args, aclRules(t, k)...)...)
	logs := &servicetest.Buffer{}
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
		if t.Failed() {
			t.Logf("external Redis logs:\n%s", logs)
		}
	})
	tlsConfig := &tls.Config{RootCAs: cert.pool, ServerName: host, MinVersion: tls.VersionTLS12}
	c := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(host, port), Username: user, Password: password, MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := k.Net.Dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return tls.Client(conn, tlsConfig), nil
		}})
	defer c.Close()
	kubelet.PollEvery(t, 20*time.Second, 20*time.Millisecond, "the external Redis to answer over TLS", func() bool { return c.Ping(t.Context()).Err() == nil })
	k.ConfigMaps["sessioncache-redis-ca"] = map[string]string{"ca.crt": string(cert.caPEM)}
	s := runService(t, k, img)
	s.stop(t)
}

// sentinel: three pods of a Redis and a Sentinel each, started one after
// the other by their own scripts; the service on the failover client.
// Then the master's pod is deleted: the Sentinels promote a replica, the
// service follows (revocations still reach a replica), and the pod, back
// at a new address, joins as a replica of the new master.
func runSentinel(t *testing.T, k *cluster, img *dockerImage) {
	if len(k.m.statefulSets) != 1 {
		t.Fatalf("want one Redis StatefulSet, got %d", len(k.m.statefulSets))
	}
	sts := k.m.statefulSets[0]
	pods := k.RunStatefulSet(sts)
	for _, p := range pods {
		checkRedisPod(t, k, p)
	}
	_, c := k.m.api(t)
	master, _ := envVar(c, settingEnv(t, "redis-master"))
	self := func(p *kubelet.Pod) string { return p.Name + "." + sts.Spec.ServiceName }
	masterOf := func(p *kubelet.Pod) string {
		sc := redis.NewSentinelClient(&redis.Options{Addr: net.JoinHostPort(p.IP, "26379"), Dialer: k.Net.Dial, MaxRetries: -1})
		defer sc.Close()
		addr, err := sc.GetMasterAddrByName(t.Context(), master.Value).Result()
		if err != nil || len(addr) != 2 {
			return ""
		}
		return addr[0]
	}
	for _, p := range pods {
		kubelet.PollEvery(t, 30*time.Second, 50*time.Millisecond, "Sentinel "+p.Name+" to know the master and two replicas", func() bool {
			sc := redis.NewSentinelClient(&redis.Options{Addr: net.JoinHostPort(p.IP, "26379"), Dialer: k.Net.Dial, MaxRetries: -1})
			defer sc.Close()
			replicas, err := sc.Replicas(t.Context(), master.Value).Result()
			return err == nil && len(replicas) == 2 && masterOf(p) == self(pods[0])
		})
	}
	s := runService(t, k, img)
	tok := s.api.login(alice, "tablet").str("refresh_token")
	tok = s.api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok)).str("refresh_token")
	// The rotation reached a replica before the master goes.
	if err := k.redisClient(t, net.JoinHostPort(pods[0].IP, "6379")).Do(t.Context(), "WAIT", 2, 5000).Err(); err != nil {
		t.Fatal(err)
	}

	k.Delete(pods[0])
	var promoted string
	kubelet.PollEvery(t, time.Minute, 100*time.Millisecond, "the Sentinels to promote a replica", func() bool {
		promoted = masterOf(pods[1])
		return promoted != "" && promoted != self(pods[0])
	})
	s.untilServes(t, time.Minute, true)
	tok = s.rotates(t, time.Minute, tok)

	pods[0] = k.Run(kubelet.StatefulSetPod(sts, 0))
	k.WaitReady(pods[0], time.Minute)
	back := k.redisClient(t, net.JoinHostPort(pods[0].IP, "6379"))
	kubelet.PollEvery(t, time.Minute, 100*time.Millisecond, pods[0].Name+" to replicate the new master", func() bool {
		info, err := back.Info(t.Context(), "replication").Result()
		return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_host:"+promoted) && strings.Contains(info, "master_link_status:up")
	})
	kubelet.PollEvery(t, time.Minute, 100*time.Millisecond, "the restarted Sentinel to follow the new master", func() bool { return masterOf(pods[0]) == promoted })
	s.rotates(t, time.Minute, tok)
	s.untilServes(t, time.Minute, true)
	s.stop(t)
}

// cluster: six nodes started at once by their own script, joined by the
// Job; the service on the cluster client, through the nodes' names. Then
// every node is replaced at once, each at a new address: start-redis.sh
// rewrites the addresses nodes.conf kept, the cluster finds itself again,
// and the sessions are still there.
func runCluster(t *testing.T, k *cluster, img *dockerImage) {
	if len(k.m.statefulSets) != 1 || len(k.m.jobs) != 1 {
		t.Fatalf("want one Redis StatefulSet and one Job, got %d and %d", len(k.m.statefulSets), len(k.m.jobs))
	}
	sts := k.m.statefulSets[0]
	pods := k.RunStatefulSet(sts)
	for _, p := range pods {
		checkRedisPod(t, k, p)
	}
	k.RunJob(k.m.jobs[0])
	// Every node knows the six at their current addresses, with the slots
	// covered and its replication link up, and sends clients to the nodes'
	// names, which survive a new address.
	name := regexp.MustCompile(`^` + regexp.QuoteMeta(sts.Name) + `-[0-9]+\.` + regexp.QuoteMeta(sts.Spec.ServiceName) + `:6379$`)
	clusterOK := func(pods []*kubelet.Pod) func() error {
		var clients []*redis.Client
		for _, p := range pods {
			clients = append(clients, k.internalClient(t, net.JoinHostPort(p.IP, "6379")))
		}
		return func() error {
			for i, c := range clients {
				info, err := c.ClusterInfo(t.Context()).Result()
				if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:6") {
					return fmt.Errorf("%s: %v %q", pods[i].Name, err, info)
				}
				nodes, err := c.ClusterNodes(t.Context()).Result()
				if err != nil {
					return err
				}
				for _, p := range pods {
					if !strings.Contains(nodes, " "+p.IP+":6379@") {
						return fmt.Errorf("%s does not know %s at its address %s:\n%s", pods[i].Name, p.Name, p.IP, nodes)
					}
				}
				// Replication is up: revocations wait for a replica.
				repl, err := c.Info(t.Context(), "replication").Result()
				if err != nil || !strings.Contains(repl, "master_link_status:up") && !regexp.MustCompile(`slave0:.*state=online`).MatchString(repl) {
					return fmt.Errorf("%s: replication %v %q", pods[i].Name, err, repl)
				}
				// CLUSTER SLOTS, deprecated for CLUSTER SHARDS, is still what
				// go-redis reads its topology from: the addresses clients get.
				//lint:ignore SA1019 the reply go-redis routes by
				slots, err := c.ClusterSlots(t.Context()).Result()
				if err != nil || len(slots) != 3 {
					return fmt.Errorf("%s: CLUSTER SLOTS %v %v", pods[i].Name, slots, err)
				}
				for _, sl := range slots {
					for _, n := range sl.Nodes {
						if !name.MatchString(n.Addr) {
							return fmt.Errorf("%s: CLUSTER SLOTS sends clients to %s, not to a node's name", pods[i].Name, n.Addr)
						}
					}
				}
			}
			return nil
		}
	}
	kubelet.WaitFor(t, time.Minute, 100*time.Millisecond, "the cluster to be ok on every node", clusterOK(pods))
	s := runService(t, k, img)
	tok := s.api.login(alice, "tablet").str("refresh_token")
	tok = s.api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok)).str("refresh_token")
	// The rotation reached a replica before the nodes go.
	for _, p := range pods {
		c := k.redisClient(t, net.JoinHostPort(p.IP, "6379"))
		if repl, err := c.Info(t.Context(), "replication").Result(); err != nil || !strings.Contains(repl, "role:master") {
			continue
		}
		if err := c.Do(t.Context(), "WAIT", 1, 5000).Err(); err != nil {
			t.Fatal(err)
		}
	}

	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Add(1)
		go func() { defer wg.Done(); k.Delete(p) }()
	}
	wg.Wait()
	old := map[string]bool{}
	for _, p := range pods {
		old[p.IP] = true
	}
	pods = k.RunStatefulSet(sts)
	for _, p := range pods {
		if old[p.IP] {
			t.Fatalf("pod %s came back at its old address", p.Name)
		}
	}
	kubelet.WaitFor(t, 2*time.Minute, 100*time.Millisecond, "the cluster to find itself at its new addresses", clusterOK(pods))
	s.rotates(t, time.Minute, tok)
	s.untilServes(t, time.Minute, true)
	s.stop(t)
}

// Without fsGroup the kubelet leaves the Secret's files root's, whatever
// their mode: the service (user 65532) cannot read them and exits 2. This
// is the bug of the manifest before this test: it must stay caught.
func TestKubeletSecretsNeedFSGroup(t *testing.T) {
	kubelet.RequireRoot(t)
	img := buildImage(t)
	m := renderDir(t, filepath.Join(kubernetesDir, "overlays", "in-namespace"))
	d := m.deployments[0].DeepCopy()
	if d.Spec.Template.Spec.SecurityContext.FSGroup == nil {
		t.Fatal("the Deployment sets no fsGroup")
	}
	d.Spec.Template.Spec.SecurityContext.FSGroup = nil
	k := newKubelet(t, m, testSecrets())
	c := k.Run(kubelet.DeploymentPod(d, &img.Image)).Containers[0]
	kubelet.PollEvery(t, 20*time.Second, 10*time.Millisecond, "the service to exit", func() bool {
		_, ok := c.Exited()
		return ok
	})
	if code, _ := c.Exited(); code != exitConfig || !strings.Contains(c.Logs.String(), "permission denied") {
		t.Errorf("without fsGroup: exit code %d, logs %s; want %d and permission denied", code, c.Logs, exitConfig)
	}
	var secretFile string
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if strings.HasSuffix(e.Name, "_FILE") {
			secretFile = c.Env[e.Name]
			break
		}
	}
	if got := describe(secretFile); !strings.HasSuffix(got, " 0:0") {
		t.Errorf("a Secret file without fsGroup is %s, want root's", got)
	}
}

// The wrong ACL is refused, with a clear error and not a hang: the
// in-namespace overlay run with rules that lack a command the service
// needs (EVALSHA), or with a service whose password is not Redis's, keeps
// the service's pod unready, and its log names the refusal. Redis runs as
// the overlay describes, with the default user off.
func TestKubeletRefusesTheWrongACL(t *testing.T) {
	kubelet.RequireRoot(t)
	img := buildImage(t)
	for _, tc := range []struct {
		name     string
		rules    func(string) string
		password string
		want     []string
	}{
		{"rules without evalsha", func(r string) string { return strings.Replace(r, "\n+evalsha\n", "\n", 1) }, "",
			[]string{`"reason":"redis_acl"`, "'evalsha'", "redis-acl/rules"}},
		{"a wrong password", nil, "not-the-redis-password-012345678", []string{"WRONGPASS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := renderDir(t, filepath.Join(kubernetesDir, "overlays", "in-namespace"))
			if tc.rules != nil {
				changed := false
				for _, cm := range m.configMaps {
					if strings.HasPrefix(cm.Name, "sessioncache-redis-acl") {
						before := cm.Data["rules"]
						cm.Data["rules"] = tc.rules(before)
						changed = cm.Data["rules"] != before
					}
				}
				if !changed {
					t.Fatal("the rules did not change")
				}
			}
			k := newKubelet(t, m, testSecrets())
			checkRedisPod(t, k, k.RunStatefulSet(m.statefulSets[0])[0])
			if tc.password != "" {
				// The service's copy of the Secret only: Redis has started.
				k.Secrets["sessioncache"]["redis-password"] = tc.password
			}
			p := k.Run(kubelet.DeploymentPod(m.deployments[0], &img.Image))
			c := p.Containers[0]
			port, err := kubelet.ContainerPort(c.Spec, c.Spec.ReadinessProbe.HTTPGet.Port.String())
			if err != nil {
				t.Fatal(err)
			}
			base := "http://" + net.JoinHostPort(p.IP, strconv.Itoa(port))
			kubelet.PollEvery(t, 30*time.Second, 50*time.Millisecond, "the service to answer /readyz 503 and log why", func() bool {
				if code, ok := c.Exited(); ok {
					t.Fatalf("the service exited (%d):\n%s", code, c.Logs)
				}
				logs := c.Logs.String()
				for _, w := range tc.want {
					if !strings.Contains(logs, w) {
						return false
					}
				}
				return status(base+c.Spec.ReadinessProbe.HTTPGet.Path) == http.StatusServiceUnavailable
			})
			key, _, _ := strings.Cut(k.Secrets["sessioncache"]["api-keys"], "\n")
			if r := newAPIClient(t, base, key).do("POST", "/v1/sessions", loginBody(alice, "laptop")); r.status != http.StatusServiceUnavailable {
				t.Errorf("a login on the wrong ACL: %d %s, want 503", r.status, r.raw)
			}
		})
	}
}
