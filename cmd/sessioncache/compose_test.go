package main

// docker-compose.yml, decoded strictly and run the way Compose runs it,
// without a Docker engine: Redis with the compose file's own command line,
// and the service's binary built as the Dockerfile builds it, each in a
// container of its own (kubelet_test.go's sandbox).

import (
	"context"
	"fmt"
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
)

const composePath = "../../docker-compose.yml"

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
// as Compose does; an unset ${VAR:?...} fails.
func interpolate(t *testing.T, s string, env map[string]string) string {
	t.Helper()
	return regexp.MustCompile(`\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}`).ReplaceAllStringFunc(s, func(m string) string {
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
	for k := range svc.Environment {
		if !isSetting(k) {
			t.Errorf("environment %s is not a setting of the service", k)
		}
		if k == envAPIKey || k == envSecret {
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

// The compose file, run as Compose would run it, with the kubelet test's
// sandbox (kubelet_test.go): each container at an address of its own,
// Compose's DNS (the service names) as its /etc/hosts, its user, cap_drop
// and no-new-privileges. Redis runs the compose file's command line as the
// image's user (redis, 999) in its volume, and must pass its health check
// first (depends_on: service_healthy); the service, as the image's user,
// with the image's environment and the service's (interpolated from the
// caller's), its secrets written where and as Compose writes them, must
// pass the image's health check and serve the API with the key of its
// secret, on the Redis it names.
func TestComposeRunsTheService(t *testing.T) {
	requireRoot(t)
	f := readCompose(t)
	img := buildImage(t)
	svc, rs := f.Services["sessioncache"], f.Services["redis"]
	host := map[string]string{ // the caller's environment
		"SESSIONCACHE_API_KEY": randomHex(16),
		"SESSIONCACHE_SECRET":  randomHex(32),
	}
	k := newKubelet(t, &manifests{}, nil)

	// Redis. The image's WORKDIR is /data, the volume, which its
	// entrypoint gives to the redis user; Redis binds the container's
	// address (in Docker, every interface of the container).
	if len(rs.Command) == 0 || rs.Command[0] != "redis-server" {
		t.Fatalf("redis command %q: want redis-server and its arguments", rs.Command)
	}
	if len(rs.Volumes) != 1 || !strings.HasSuffix(rs.Volumes[0], ":/data") {
		t.Fatalf("redis volumes %q: want one volume on /data", rs.Volumes)
	}
	redisPod := &pod{name: "redis", ip: k.net.allocate(), root: podRoot(t)}
	data := filepath.Join(redisPod.root, "data")
	mkdir(t, data, 0o755)
	if err := os.Chown(data, 999, 999); err != nil {
		t.Fatal(err)
	}
	rc := &container{pod: redisPod, name: "redis", env: map[string]string{}, mounts: map[string]string{"/data": data}, logs: &syncBuffer{}}
	rc.setEnv("PATH", os.Getenv("PATH"))
	rc.argv = append(append([]string{}, rs.Command...), "--bind", redisPod.ip)
	rc.box = sandbox{hosts: k.net.file, uid: 999, gid: 999, dir: data, writable: []string{data}}
	k.net.publish(redisPod.ip, "redis")
	k.startContainer(rc)
	if rs.Healthcheck == nil || len(rs.Healthcheck.Test) < 2 || rs.Healthcheck.Test[0] != "CMD" {
		t.Fatalf("redis health check %v: want [CMD, ...]", rs.Healthcheck)
	}
	if svc.DependsOn["redis"].Condition != "service_healthy" {
		t.Errorf("sessioncache depends_on redis %q: want service_healthy", svc.DependsOn["redis"].Condition)
	}
	healthy := func(c *container, test []string) func() error {
		return func() error {
			if code, ok := c.exited(); ok {
				t.Fatalf("%s exited with code %d:\n%s", c.name, code, c.logs)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			out, err := c.box.command(ctx, podLoopback(test, c.pod.ip), c.environ()).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%q: %v: %s", test, err, out)
			}
			return nil
		}
	}
	waitFor(t, 30*time.Second, 50*time.Millisecond, "Redis's health check", healthy(rc, rs.Healthcheck.Test[1:]))

	// The service.
	if svc.User != "" {
		t.Fatalf("user %q: this test runs the image's USER", svc.User)
	}
	sp := &pod{name: "sessioncache", ip: k.net.allocate(), root: podRoot(t)}
	sc := &container{pod: sp, name: "sessioncache", env: map[string]string{}, mounts: map[string]string{}, logs: &syncBuffer{}}
	// Secrets: Compose copies each into the container before it starts, at
	// /run/secrets/<name>, read-only, with the mode given (0444 by default)
	// and, when a uid or gid is given, owned by the container's user
	// (Docker's CopyUIDGID); else root's.
	secrets := filepath.Join(sp.root, "run-secrets")
	mkdir(t, secrets, 0o755)
	sc.mounts["/run/secrets"] = secrets
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
		value, ok := host[f.Secrets[s.Source].Environment]
		if !ok {
			t.Fatalf("secret %s: from %q, which the caller's environment here does not set", s.Source, f.Secrets[s.Source].Environment)
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
			if s.UID != strconv.Itoa(img.uid) || s.GID != strconv.Itoa(img.gid) {
				t.Errorf("secret %s: uid:gid %s:%s; Docker gives the file to the container's user %d:%d whatever they say", s.Source, s.UID, s.GID, img.uid, img.gid)
			}
			if err := os.Chown(file, img.uid, img.gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The environment: the image's, then the service's.
	for _, kv := range img.env {
		name, v, _ := strings.Cut(kv, "=")
		sc.setEnv(name, v)
	}
	for name, v := range svc.Environment {
		sc.setEnv(name, mapPaths(interpolate(t, v, host), sc.mounts))
	}
	if v := sc.env[envListen]; v != "" {
		sc.env[envListen] = podListen(t, v, sp.ip)
	}
	if u, err := url.Parse(sc.env[envRedisURL]); err != nil || u.Hostname() != "redis" {
		t.Fatalf("%s=%q: want the compose service redis", envRedisURL, sc.env[envRedisURL])
	}
	sc.argv = []string{img.binary}
	sc.box = sandbox{hosts: k.net.file, uid: uint32(img.uid), gid: uint32(img.gid), dir: "/", readOnly: []string{secrets},
		noNewPrivs:  slices.Contains(svc.SecurityOpt, "no-new-privileges:true"),
		dropAllCaps: slices.Contains(svc.CapDrop, "ALL")}
	k.net.publish(sp.ip, "sessioncache")
	k.startContainer(sc)

	// The image's health check, run in the container as Docker runs it.
	check := append([]string{img.hostPath(img.healthcheck[0])}, img.healthcheck[1:]...)
	waitFor(t, 30*time.Second, 50*time.Millisecond, "the image's health check", healthy(sc, check))
	base := "http://" + sc.env[envListen]
	api := newAPIClient(t, base, host["SESSIONCACHE_API_KEY"])
	tok := api.login(alice, "laptop").str("refresh_token")
	api.must(200, "POST", "/v1/tokens/rotate", refreshBody(tok))
	if lines := scanLines(api.send("GET", "/metrics", "", nil).raw, "sessioncache_build_info{"); len(lines) != 1 || !strings.Contains(lines[0], `version="`+img.version+`"`) {
		t.Errorf("build info %q, want version %s", lines, img.version)
	}
	rdb := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(redisPod.ip, "6379")})
	defer rdb.Close()
	keys, err := rdb.Keys(t.Context(), "*").Result()
	if err != nil || len(keys) == 0 {
		t.Errorf("the compose Redis holds no key (%v): the service did not use it", err)
	}
	if _, err := os.Stat(filepath.Join(data, "appendonlydir")); err != nil {
		t.Errorf("no append-only file on the Redis volume: %v", err)
	}
}
