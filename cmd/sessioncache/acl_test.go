package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/internal/redistest"
	"github.com/sessioncache/sessioncache/redisstore"
)

// aclRulesPath is the rules file, from this package's folder.
var aclRulesPath = filepath.Join("..", "..", aclRulesFile)

// aclRules reads the rules file: its rules (comments and blank lines
// left out) and the commands it allows (+name, lower case).
func aclRules(t *testing.T) (rules, commands []string) {
	t.Helper()
	b, err := os.ReadFile(aclRulesPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rules = append(rules, line)
		if strings.HasPrefix(line, "+") {
			commands = append(commands, strings.TrimPrefix(line, "+"))
		}
	}
	slices.Sort(commands)
	return rules, commands
}

// aclRulesFor are the rules with the default key prefix replaced by
// prefix.
func aclRulesFor(t *testing.T, prefix string) []string {
	rules, _ := aclRules(t)
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = strings.Replace(strings.Replace(r, "~"+redisstore.DefaultKeyPrefix, "~"+prefix, 1), "&"+redisstore.DefaultKeyPrefix, "&"+prefix, 1)
	}
	return out
}

// goRedisCommands maps the go-redis methods the code calls to the commands
// they send.
var goRedisCommands = map[string]string{"HGet": "hget", "HMGet": "hmget", "HExists": "hexists", "ZRange": "zrange", "Info": "info",
	"Subscribe": "subscribe", "Ping": "ping", "Get": "get", "Set": "set", "Del": "del",
	"HGetAll": "hgetall", "HDel": "hdel", "Scan": "scan"}

// commandsUsed reads the commands the code sends Redis out of its source:
// the scripts' redis.call and redis.pcall (lua/*.lua, and scripts written
// in Go), the commands Go code spells out ("hget", "wait") and the go-redis
// methods of goRedisCommands. A script, run by go-redis, sends EVALSHA,
// EVAL and (to load it for readiness) SCRIPT LOAD.
func commandsUsed(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../../lua/*.lua", "../../redisstore/*.go", "*.go", "internal/*/*.go"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			if !strings.HasSuffix(f, "_test.go") {
				files = append(files, f)
			}
		}
	}
	luaCall := regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z]+)'`)
	// In the library, a command spelt out starts a []any or [3]any of
	// arguments; anywhere, it follows Do(ctx.
	spelt := regexp.MustCompile(`Do\(ctx, "([a-z]+)"`)
	speltInStore := regexp.MustCompile(`any\{"([a-z]+)", `)
	method := regexp.MustCompile(`\.([A-Z][A-Za-z]+)\(ctx\b`)
	used := map[string]bool{}
	for _, f := range files {
		if f == "aclprobe.go" {
			continue // the probe sends what the others do
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		for _, m := range luaCall.FindAllStringSubmatch(src, -1) {
			used[strings.ToLower(m[1])] = true
		}
		if strings.HasSuffix(f, ".go") {
			for _, m := range spelt.FindAllStringSubmatch(src, -1) {
				used[m[1]] = true
			}
			if strings.Contains(f, "redisstore") {
				for _, m := range speltInStore.FindAllStringSubmatch(src, -1) {
					used[m[1]] = true
				}
			}
			for _, m := range method.FindAllStringSubmatch(src, -1) {
				if c, ok := goRedisCommands[m[1]]; ok {
					used[c] = true
				}
			}
			if strings.Contains(src, "redis.NewScript(") {
				used["evalsha"], used["eval"], used["script|load"] = true, true, true
			}
		}
	}
	// go-redis's cluster client maps slots to nodes, and learns where each
	// command's keys are.
	used["cluster|slots"], used["command"] = true, true
	return slices.Sorted(func(yield func(string) bool) {
		for c := range used {
			if !yield(c) {
				return
			}
		}
	})
}

// The rules file allows exactly the commands the code sends (a command
// added to a script without its rule fails here, not in production), on
// the default key prefix and its revocation channel; the readiness probe
// sends each of them but the feed's and the cluster's.
func TestACLRulesAreTheCommandsUsed(t *testing.T) {
	rules, commands := aclRules(t)
	if d := cmp.Diff(commandsUsed(t), commands); d != "" {
		t.Errorf("%s allows other commands than the code sends (-sent +allowed):\n%s", aclRulesFile, d)
	}
	for _, want := range []string{"resetkeys", "~" + redisstore.DefaultKeyPrefix + "*", "resetchannels", "&" + redisstore.DefaultKeyPrefix + "revoked", "-@all"} {
		if !slices.Contains(rules, want) {
			t.Errorf("%s lacks the rule %s", aclRulesFile, want)
		}
	}
	for _, r := range rules {
		if strings.HasPrefix(r, "+@") || r == "allkeys" || r == "allcommands" || r == "allchannels" || r == "~*" || r == "&*" {
			t.Errorf("%s allows %s: name each command, key pattern and channel", aclRulesFile, r)
		}
	}
	probed := map[string]bool{}
	for _, args := range aclProbeCommands("sc:") {
		name := args[0].(string)
		if name == "script" {
			name += "|" + args[1].(string)
		}
		probed[name] = true
	}
	var missing []string
	for _, c := range commands {
		// ASKING is not probed: it would leave its flag on a pooled
		// connection of a cluster, for whatever command comes next.
		if !probed[c] && c != "subscribe" && c != "command" && c != "asking" && !strings.HasPrefix(c, "cluster|") {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		t.Errorf("the readiness probe does not send %v", missing)
	}
}

// aclUser creates user on every node with the rules for prefix, and
// password, from admin connections.
func aclUser(t *testing.T, nodes []*redis.Client, user, password string, rules []string) {
	t.Helper()
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password}
	for _, r := range rules {
		args = append(args, r)
	}
	for _, n := range nodes {
		if err := n.Do(context.Background(), args...).Err(); err != nil {
			t.Fatalf("ACL SETUSER on %s: %v", n.Options().Addr, err)
		}
	}
}

// aclDenials returns what the ACL refused user on the nodes (ACL LOG).
func aclDenials(t *testing.T, nodes []*redis.Client, user string) []string {
	t.Helper()
	var out []string
	for _, n := range nodes {
		entries, err := n.Do(context.Background(), "ACL", "LOG", "100").Slice()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			fields := map[string]any{}
			switch e := e.(type) {
			case map[any]any:
				for k, v := range e {
					fields[fmt.Sprint(k)] = v
				}
			case []any:
				for i := 0; i+1 < len(e); i += 2 {
					fields[fmt.Sprint(e[i])] = e[i+1]
				}
			}
			if fields["username"] == user {
				out = append(out, fmt.Sprintf("%v %v %v", fields["reason"], fields["context"], fields["object"]))
			}
		}
	}
	return out
}

// useACL is the everyday use of the API, every store operation: logins,
// rotations (grace, reuse), introspection, listing, forward auth, the token
// endpoint with a DPoP proof (and its replay refused), every revocation.
func useACL(t *testing.T, c *apiClient, addr string) {
	t.Helper()
	walk(t, c)
	user := "acl|" + uuid.NewString()
	g := c.login(user, "laptop")
	next := c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(g.str("refresh_token")))
	if again := c.must(http.StatusOK, "POST", "/v1/tokens/rotate", refreshBody(g.str("refresh_token"))); again.str("refresh_token") != next.str("refresh_token") {
		t.Error("a rotation within grace did not answer the same successor")
	}
	fa := c.send("GET", "/v1/auth", "", http.Header{"X-Sessioncache-Key": {c.apiKey}, "Authorization": {"Bearer " + next.str("access_token")}})
	if fa.status != http.StatusOK {
		t.Errorf("forward auth: %d %s", fa.status, fa.raw)
	}
	c.must(http.StatusOK, "POST", "/v1/tokens/revoke", refreshBody(next.str("refresh_token")))
	g2 := c.login(user, "phone")
	c.must(http.StatusOK, "DELETE", "/v1/users/"+user+"/sessions/"+g2.str("session_id"), "")

	k := newDPoPKey(t, time.Now)
	bound := c.must(http.StatusCreated, "POST", "/v1/sessions", `{"user_id":"`+user+`","client_id":"`+testClient+`","dpop_jkt":"`+k.jkt+`"}`)
	public := &apiClient{t: t, base: c.base, http: c.http}
	proof := http.Header{"Dpop": {k.proof(t, "POST", "http://"+addr+tokenPath, "", "")}}
	r := public.tokenForm(refreshForm(bound.str("refresh_token"), testClient), proof)
	if r.status != http.StatusOK {
		t.Fatalf("a DPoP refresh: %d %s", r.status, r.raw)
	}
	checkOAuthError(t, "a replayed proof", public.tokenForm(refreshForm(r.str("refresh_token"), testClient), proof), http.StatusBadRequest, "invalid_dpop_proof", "replayed")
	c.must(http.StatusOK, "DELETE", "/v1/users/"+user+"/sessions", "")
}

// The service works on a Redis, and on a cluster, whose user has the rules
// of deploy/kubernetes/base/redis-acl/rules and nothing more (Redis's ACL
// LOG records no refusal), with the default user off; without one command
// of them it stays unready, its log naming the command, rather than fail
// half way through a script.
func TestServiceOnTheACLRules(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		srv := redistest.StartServer(t)
		ctx := context.Background()
		admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
		t.Cleanup(func() { admin.Close() })
		if err := admin.Do(ctx, "ACL", "SETUSER", "admin", "on", ">admin-password-0123", "~*", "&*", "+@all").Err(); err != nil {
			t.Fatal(err)
		}
		admin = redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2, Username: "admin", Password: "admin-password-0123"})
		t.Cleanup(func() { admin.Close() })
		if err := admin.Do(ctx, "ACL", "SETUSER", "default", "off").Err(); err != nil {
			t.Fatal(err)
		}
		testACL(t, []*redis.Client{admin}, map[string]string{envRedisURL: "redis://" + srv.Addr + "/0"})
	})
	t.Run("cluster", func(t *testing.T) {
		redistest.For(t, redistest.Cluster)
		seeds := strings.Split(os.Getenv(redistest.EnvClusterAddrs), ",")
		first := redis.NewClient(&redis.Options{Addr: seeds[0], Protocol: 2})
		t.Cleanup(func() { first.Close() })
		nodes, err := redistest.ClusterNodes(context.Background(), first)
		if err != nil {
			t.Fatal(err)
		}
		var admins []*redis.Client
		for _, n := range nodes {
			c := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2})
			t.Cleanup(func() { c.Close() })
			admins = append(admins, c)
		}
		testACL(t, admins, map[string]string{envRedisURL: "redis://" + strings.Join(seeds, ","), envRedisMode: modeCluster})
	})
}

func testACL(t *testing.T, nodes []*redis.Client, env map[string]string) {
	prefix := redistest.NewPrefix()
	user, password := "sc-"+strings.TrimSuffix(prefix, ":"), "acl-password-0123456789"
	rules := aclRulesFor(t, prefix)
	aclUser(t, nodes, user, password, rules)
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Do(context.Background(), "ACL", "DELUSER", user)
		}
	})
	dir := t.TempDir()
	start := func(t *testing.T) *proc {
		e := map[string]string{envKeyPrefix: prefix, envAPIKey: goodKey,
			envRedisUsernameFile: writeFile(t, dir, "user", user+"\n"), envRedisPasswordFile: writeFile(t, dir, "password", password+"\n")}
		for k, v := range env {
			e[k] = v
		}
		return startService(t, e)
	}
	t.Run("the rules", func(t *testing.T) {
		p := start(t)
		c := newAPIClient(t, "http://"+p.addr, goodKey)
		c.metricsBase = "http://" + p.MetricsAddr
		useACL(t, c, p.addr)
		if d := aclDenials(t, nodes, user); len(d) > 0 {
			t.Errorf("Redis refused the service's user: %v", d)
		}
		if logs := p.logs.String(); strings.Contains(logs, "NOPERM") {
			t.Errorf("the service's log shows a refusal:\n%s", logs)
		}
	})
	for _, missing := range []string{"evalsha", "hset", "publish", "script|load"} {
		t.Run("without "+missing, func(t *testing.T) {
			var fewer []string
			for _, r := range rules {
				if r != "+"+missing {
					fewer = append(fewer, r)
				}
			}
			aclUser(t, nodes, user, password, fewer)
			defer aclUser(t, nodes, user, password, rules)
			p := start(t)
			base := "http://" + p.addr
			poll(t, 10*time.Second, "/readyz 503 redis_acl, and the log naming "+missing, func() bool {
				resp, err := http.Get(base + "/readyz")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				logs := p.logs.String()
				return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(logs, `"reason":"redis_acl"`) &&
					strings.Contains(logs, "'"+missing+"'") && strings.Contains(logs, aclRulesFile)
			})
		})
	}
}
