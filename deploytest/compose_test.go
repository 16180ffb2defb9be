package deploytest

// docker-compose.yml, decoded strictly and run the way Compose runs it,
// without a Docker engine: Redis with the compose file's own command line,
// and the service's binary built as the Dockerfile builds it, each in a
// container of its own (the kubelet emulation's sandbox).

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"sigs.k8s.io/yaml"

	"github.com/sessioncache/sessioncache/deploytest/internal/kubelet"
)

const composePath = "../docker-compose.yml"

// composeFile is docker-compose.yml, as far as it goes: an unknown or
// misspelt field fails the strict decoding.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Secrets  map[string]struct {
		Environment string `json:"environment"`
		File        string `json:"file"`
	} `json:"secrets"`
	Volumes map[string]any `json:"volumes"`
}

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context string            `json:"context"`
		Args    map[string]string `json:"args"`
	} `json:"build"`
	User      string   `json:"user"`
	Command   []string `json:"command"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Environment map[string]string `json:"environment"`
	Secrets     []struct {
		Source string `json:"source"`
		Target string `json:"target"`
		UID    string `json:"uid"`
		GID    string `json:"gid"`
		Mode   *int   `json:"mode"`
	} `json:"secrets"`
	Ports       []string `json:"ports"`
	Volumes     []string `json:"volumes"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval"`
		Timeout     string   `json:"timeout"`
		Retries     int      `json:"retries"`
		StartPeriod string   `json:"start_period"`
	} `json:"healthcheck"`
	CapDrop         []string `json:"cap_drop"`
	SecurityOpt     []string `json:"security_opt"`
	StopGracePeriod string   `json:"stop_grace_period"`
	Restart         string   `json:"restart"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f
}

// interpolate fills ${VAR}, ${VAR:-default} and ${VAR:?message} from env,
// as Compose does, and makes $$ a $; an unset ${VAR:?...} fails.
func interpolate(t *testing.T, s string, env map[string]string) string {
	t.Helper()
	return regexp.MustCompile(`\$\$|\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}`).ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		g := regexp.MustCompile(`\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}`).FindStringSubmatch(m)
		if v := env[g[1]]; v != "" {
			return v
		}
		switch g[2] {
		case ":-":
			return g[3]
		case ":?":
			t.Fatalf("docker-compose.yml needs %s: %s", g[1], g[3])
		}
		return ""
	})
}

// The file itself: pinned images, the version the manifests deploy, the
// secrets in files only, the image's health check, Redis as a token store.
func TestDockerCompose(t *testing.T) {
	f := readCompose(t)
	redis, svc := f.Services["redis"], f.Services["sessioncache"]
	if !pinned(redis.Image) || redis.Healthcheck == nil || redis.Healthcheck.Test == nil {
		t.Errorf("redis service: image %q (want a pinned version), health check %v", redis.Image, redis.Healthcheck)
	}
	checkTokenStoreRedis(t, "docker-compose.yml", redis.Command)
	img := interpolate(t, svc.Image, nil)
	if !pinned(img) || !strings.HasSuffix(img, ":"+imageVersion(t)) {
		t.Errorf("sessioncache image %q: want the version the Kubernetes base pins (%s)", img, imageVersion(t))
	}
	if svc.Build == nil || interpolate(t, svc.Build.Args["VERSION"], nil) != imageVersion(t) {
		t.Errorf("sessioncache build: want the VERSION build argument %s, so that the binary reports it", imageVersion(t))
	}
	if len(svc.Ports) != 1 || !strings.HasPrefix(svc.Ports[0], "127.0.0.1:") {
		t.Errorf("ports %v: want published on 127.0.0.1 only", svc.Ports)
	}
	// The issuer, unless the caller names another, is where the service is
	// published: http://127.0.0.1:<host port>.
	published := ""
	if len(svc.Ports) == 1 {
		published = svc.Ports[0][:strings.LastIndexByte(svc.Ports[0], ':')]
	}
	issuer := settingEnv(t, "issuer")
	if got := interpolate(t, svc.Environment[issuer], nil); got != "http://"+published {
		t.Errorf("%s=%q: want the published address, http://%s", issuer, got, published)
	}
	if got := interpolate(t, svc.Environment[issuer], map[string]string{issuer: "https://auth.example.com"}); got != "https://auth.example.com" {
		t.Errorf("%s=%q with %s=https://auth.example.com in the caller's environment: want the caller's", issuer, got, issuer)
	}
	for k := range svc.Environment {
		s, ok := lookupSetting(t, k)
		if !ok {
			t.Errorf("environment %s is not a setting of the service", k)
		}
		if s.Secret {
			t.Errorf("environment %s: secrets go in files (secrets:), never in the environment", k)
		}
	}
	for _, s := range svc.Secrets {
		if src, ok := f.Secrets[s.Source]; !ok || src.Environment == "" && src.File == "" {
			t.Errorf("secret %s is not defined", s.Source)
		}
	}
	// One health check: the image's.
	if svc.Healthcheck == nil || svc.Healthcheck.Test != nil {
		t.Errorf("sessioncache health check: want the image's (no test here), got %v", svc.Healthcheck)
	}
	if img := buildImage(t); !slices.Equal(img.healthcheck[1:], []string{"-check", "/readyz"}) {
		t.Errorf("the image's health check %q: want -check /readyz", img.healthcheck)
	}
}

// The compose file, run as Compose would run it, with the kubelet
// emulation's sandbox: each container at an address of its own,
// Compose's DNS (the service names) as its /etc/hosts, its user, cap_drop
// and no-new-privileges. Redis runs the compose file's command line as the
// image's user (redis, 999) in its volume, and must pass its health check
// first (depends_on: service_healthy); the service, as the image's user,
// with the image's environment and the service's (interpolated from the
// caller's), its secrets written where and as Compose writes them, must
// pass the image's health check and serve the API with the key of its
// secret, on the Redis it names.
func TestComposeRunsTheService(t *testing.T) {
	kubelet.RequireRoot(t)
	f := readCompose(t)
	img := buildImage(t)
	svc, rs := f.Services["sessioncache"], f.Services["redis"]
	// The caller's environment: a value for each secret Compose takes from
	// it, long enough for an API key and for the secret.
	host := map[string]string{}
	for _, s := range f.Secrets {
		if s.Environment != "" {
			host[s.Environment] = randomHex(32)
		}
	}
	k := kubelet.New(t, nil, nil, nil)

	// Redis. The image's WORKDIR is /data, the volume, which its
	// entrypoint gives to the redis user; Redis binds the container's
	// address (in Docker, every interface of the container).
	if len(rs.Command) != 3 || rs.Command[0] != "sh" || rs.Command[1] != "-c" || !strings.Contains(rs.Command[2], "exec redis-server - ") {
		t.Fatalf("redis command %q: want sh -c with exec redis-server - (its configuration on standard input)", rs.Command)
	}
	if rs.User != "999:999" {
		t.Fatalf("redis user %q: want the image's redis user, 999:999 (a shell command does not drop root as the image's entrypoint would)", rs.User)
	}
	if len(rs.Volumes) != 1 || !strings.HasSuffix(rs.Volumes[0], ":/data") {
		t.Fatalf("redis volumes %q: want one volume on /data", rs.Volumes)
	}
	redisPod := k.NewPod("redis")
	data := redisPod.Folder(t, "data", 0o755)
	if err := os.Chown(data, 999, 999); err != nil {
		t.Fatal(err)
	}
	rc := redisPod.NewContainer("redis")
	rc.Mounts["/data"] = data
	rc.SetEnv("PATH", os.Getenv("PATH"))
	redisSecrets := writeComposeSecrets(t, f, rs, redisPod, rc, host, 999, 999)
	// In Docker Redis binds every interface of its container: here, the
	// pod's address.
	script := strings.Replace(interpolate(t, rs.Command[2], host), "exec redis-server - ", "exec redis-server - --bind "+redisPod.IP+" ", 1)
	rc.Argv = []string{"sh", "-c", kubelet.MapPaths(script, rc.Mounts)}
	rc.Box = kubelet.Sandbox{Hosts: k.Net.HostsFile(), UID: 999, GID: 999, Dir: data, Writable: []string{data}, ReadOnly: []string{redisSecrets}}
	k.Net.Publish(redisPod.IP, "redis")
	k.StartContainer(rc)
	if rs.Healthcheck == nil || len(rs.Healthcheck.Test) < 2 || rs.Healthcheck.Test[0] != "CMD" {
		t.Fatalf("redis health check %v: want [CMD, ...]", rs.Healthcheck)
	}
	if svc.DependsOn["redis"].Condition != "service_healthy" {
		t.Errorf("sessioncache depends_on redis %q: want service_healthy", svc.DependsOn["redis"].Condition)
	}
	healthy := func(c *kubelet.Container, test []string) func() error {
		return func() error {
			if code, ok := c.Exited(); ok {
				t.Fatalf("%s exited with code %d:\n%s", c.Name, code, c.Logs)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			out, err := c.Exec(ctx, test).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%q: %v: %s", test, err, out)
			}
			return nil
		}
	}
	test := slices.Clone(rs.Healthcheck.Test[1:])
	for i := range test {
		test[i] = kubelet.MapPaths(interpolate(t, test[i], host), rc.Mounts)
	}
	kubelet.WaitFor(t, 30*time.Second, 50*time.Millisecond, "Redis's health check", healthy(rc, test))

	// The service.
	if svc.User != "" {
		t.Fatalf("user %q: this test runs the image's USER", svc.User)
	}
	sp := k.NewPod("sessioncache")
	sc := sp.NewContainer("sessioncache")
	secrets, secretFiles := writeComposeSecrets(t, f, svc, sp, sc, host, img.UID, img.GID), map[string]string{}
	for _, s := range svc.Secrets {
		target := s.Target
		if target == "" {
			target = "/run/secrets/" + s.Source
		}
		b, err := os.ReadFile(filepath.Join(secrets, filepath.Base(target)))
		if err != nil {
			t.Fatal(err)
		}
		secretFiles[target] = string(b)
	}
	// The environment: the image's, then the service's.
	for _, kv := range img.Env {
		name, v, _ := strings.Cut(kv, "=")
		sc.SetEnv(name, v)
	}
	for name, v := range svc.Environment {
		sc.SetEnv(name, interpolate(t, v, host))
	}
	// The API key is the secret in the file the service reads its keys from.
	apiKey, ok := secretFiles[sc.Env[settingEnv(t, "api-keys-file")]]
	if !ok {
		t.Fatalf("%s=%q: want a file of the service's secrets", settingEnv(t, "api-keys-file"), sc.Env[settingEnv(t, "api-keys-file")])
	}
	listen := sc.Env[settingEnv(t, "listen")]
	sc.Localize()
	// The configuration as Docker runs it, on every interface of the
	// container, not on the emulation's loopback address: the service must
	// accept it (-check validates it all before it probes; 2 is a refusal).
	asDocker := maps.Clone(sc.Env)
	asDocker[settingEnv(t, "listen")] = listen
	if code, out := runBinary(t, asDocker, "-check", "/readyz"); code == exitConfig {
		t.Fatalf("the compose file's configuration is refused:\n%s", out)
	}
	redisURL := settingEnv(t, "redis-url")
	if u, err := url.Parse(sc.Env[redisURL]); err != nil || u.Hostname() != "redis" {
		t.Fatalf("%s=%q: want the compose service redis", redisURL, sc.Env[redisURL])
	}
	sc.Argv = []string{img.Binary}
	sc.Box = kubelet.Sandbox{Hosts: k.Net.HostsFile(), UID: uint32(img.UID), GID: uint32(img.GID), Dir: "/", ReadOnly: []string{secrets},
		NoNewPrivs:  slices.Contains(svc.SecurityOpt, "no-new-privileges:true"),
		DropAllCaps: slices.Contains(svc.CapDrop, "ALL")}
	k.Net.Publish(sp.IP, "sessioncache")
	k.StartContainer(sc)

	// The image's health check, run in the container as Docker runs it.
	check := append([]string{img.HostPath(img.healthcheck[0])}, img.healthcheck[1:]...)
	kubelet.WaitFor(t, 30*time.Second, 50*time.Millisecond, "the image's health check", healthy(sc, check))
	base := "http://" + sc.Env[settingEnv(t, "listen")]
	api := newAPIClient(t, base, apiKey)
	grant := api.login(alice, "laptop")
	api.checkForwardAuth(grant, alice)
	api.must(200, "POST", "/v1/tokens/rotate", refreshBody(grant.str("refresh_token")))
	if meta := api.send("GET", "/.well-known/oauth-authorization-server", "", nil); meta.str("issuer") != sc.Env[settingEnv(t, "issuer")] {
		t.Errorf("the metadata names the issuer %q, want the compose file's %q", meta.str("issuer"), sc.Env[settingEnv(t, "issuer")])
	}
	api.metrics = "http://" + sc.Env[settingEnv(t, "metrics-listen")]
	if lines := scanLines(api.scrape(), "sessioncache_build_info{"); len(lines) != 1 || !strings.Contains(lines[0], `version="`+img.version+`"`) {
		t.Errorf("build info %q, want version %s", lines, img.version)
	}
	// As the service's ACL user, which may read INFO but not list keys.
	rdb := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(redisPod.IP, "6379"),
		Username: strings.TrimSpace(secretFiles["/run/secrets/redis_username"]), Password: secretFiles["/run/secrets/redis_password"]})
	defer rdb.Close()
	keyspace, err := rdb.Info(t.Context(), "keyspace").Result()
	if err != nil || !regexp.MustCompile(`db0:keys=[1-9]`).MatchString(keyspace) {
		t.Errorf("the compose Redis holds no key (%v %q): the service did not use it", err, keyspace)
	}
	if err := rdb.Do(t.Context(), "keys", "*").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("the service's user may list keys (%v): want its rules only", err)
	}
	anon := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(redisPod.IP, "6379")})
	defer anon.Close()
	if err := anon.Ping(t.Context()).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("the compose Redis answers without a password: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "appendonlydir")); err != nil {
		t.Errorf("no append-only file on the Redis volume: %v", err)
	}
}

// writeComposeSecrets writes a service's secrets as Compose does: it
// copies each into the container before it starts, at
// /run/secrets/<name>, read-only, with the mode given (0444 by default)
// and, when a uid or gid is given, owned by the container's user (uid:gid,
// Docker's CopyUIDGID); else root's. A secret comes from the caller's
// environment (host) or from a file beside docker-compose.yml. It returns
// the folder mounted on /run/secrets.
func writeComposeSecrets(t *testing.T, f composeFile, svc composeService, p *kubelet.Pod, c *kubelet.Container, host map[string]string, uid, gid int) string {
	t.Helper()
	secrets := p.Folder(t, "run-secrets-"+c.Name, 0o755)
	c.Mounts["/run/secrets"] = secrets
	for _, s := range svc.Secrets {
		target := s.Target
		if target == "" {
			target = s.Source
		}
		if !strings.HasPrefix(target, "/") {
			target = "/run/secrets/" + target
		}
		if filepath.Dir(target) != "/run/secrets" {
			t.Fatalf("secret %s: target %s outside /run/secrets is not emulated", s.Source, target)
		}
		src := f.Secrets[s.Source]
		var value string
		switch {
		case src.Environment != "":
			v, ok := host[src.Environment]
			if !ok {
				t.Fatalf("secret %s: from %q, which the caller's environment here does not set", s.Source, src.Environment)
			}
			value = v
		case src.File != "":
			b, err := os.ReadFile(filepath.Join(filepath.Dir(composePath), src.File))
			if err != nil {
				t.Fatalf("secret %s: %v", s.Source, err)
			}
			value = string(b)
		default:
			t.Fatalf("secret %s is not defined", s.Source)
		}
		mode := os.FileMode(0o444)
		if s.Mode != nil {
			mode = os.FileMode(*s.Mode)
		}
		file := filepath.Join(secrets, filepath.Base(target))
		if err := os.WriteFile(file, []byte(value), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(file, mode); err != nil {
			t.Fatal(err)
		}
		if s.UID != "" || s.GID != "" {
			if s.UID != strconv.Itoa(uid) || s.GID != strconv.Itoa(gid) {
				t.Errorf("secret %s: uid:gid %s:%s; Docker gives the file to the container's user %d:%d whatever they say", s.Source, s.UID, s.GID, uid, gid)
			}
			if err := os.Chown(file, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	return secrets
}
