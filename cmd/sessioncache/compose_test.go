package main

// docker-compose.yml, decoded strictly and run the way Compose runs it,
// without a Docker engine: the service's binary built as the Dockerfile
// builds it, as the image's user, with the image's environment and the
// service's (interpolated from the caller's), its secrets written where and
// as Compose writes them, in a working directory it cannot write, against a
// Redis started with the compose file's own command line; it must pass the
// image's health check.

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/sessioncache/sessioncache/internal/redistest"
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

// The compose file's service, run as Compose would run it: it must pass
// the image's health check and serve the API with the key of its secret.
func TestComposeRunsTheService(t *testing.T) {
	f := readCompose(t)
	img := buildImage(t)
	svc := f.Services["sessioncache"]
	host := map[string]string{ // the caller's environment
		"SESSIONCACHE_API_KEY": randomHex(16),
		"SESSIONCACHE_SECRET":  randomHex(32),
	}

	// Redis, with the compose file's command line.
	redisCmd := f.Services["redis"].Command
	if len(redisCmd) == 0 || redisCmd[0] != "redis-server" {
		t.Fatalf("redis command %q: want redis-server and its arguments", redisCmd)
	}
	srv := redistest.StartServer(t, redisCmd[1:]...)

	root := podRoot(t)
	p := &pod{name: "sessioncache", container: "sessioncache", logs: &syncBuffer{}, done: make(chan struct{}), root: root, mounts: map[string]string{}, env: map[string]string{}}
	p.creds = &syscall.Credential{Uid: uint32(img.uid), Gid: uint32(img.gid), Groups: []uint32{}}
	if svc.User != "" {
		t.Fatalf("user %q: this test runs the image's USER", svc.User)
	}

	// Secrets: Compose copies each into the container before it starts, at
	// /run/secrets/<name>, with the mode given (0444 by default) and, when a
	// uid or gid is given, owned by the container's user (Docker's
	// CopyUIDGID); else root's.
	secrets := filepath.Join(root, "run-secrets")
	mkdir(t, secrets, 0o755)
	p.mounts["/run/secrets"] = secrets
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
		k, v, _ := strings.Cut(kv, "=")
		p.setEnv(k, v)
	}
	for k, v := range svc.Environment {
		p.setEnv(k, p.mapPaths(interpolate(t, v, host)))
	}
	if v := p.env[envListen]; v != "" {
		p.env[envListen] = freeListen(t, v)
	}
	// The Compose network's DNS: the service name "redis" is our server.
	u, err := url.Parse(p.env[envRedisURL])
	if err != nil || u.Hostname() != "redis" {
		t.Fatalf("%s=%q: want the compose service redis", envRedisURL, p.env[envRedisURL])
	}
	u.Host = srv.Addr
	p.env[envRedisURL] = u.String()

	p.argv = []string{img.binary}
	k := &kubelet{t: t}
	k.start(p)
	base := "http://" + p.listenAddr(t)

	// The image's health check, run in the container as Docker runs it.
	check := append([]string{img.hostPath(img.healthcheck[0])}, img.healthcheck[1:]...)
	poll(t, 30*time.Second, "the image's health check to pass", func() bool {
		if code, ok := p.exited(); ok {
			t.Fatalf("the service exited with code %d", code)
		}
		cmd := exec.Command(check[0], check[1:]...)
		cmd.Env = p.environ()
		cmd.Dir = p.cmd.Dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.creds}
		return cmd.Run() == nil
	})
	api := newAPIClient(t, base, host["SESSIONCACHE_API_KEY"])
	tok := api.login(alice, "laptop").str("refresh_token")
	api.must(200, "POST", "/v1/tokens/rotate", tokenBody(tok))
	if lines := scanLines(api.send("GET", "/metrics", "", nil).raw, "sessioncache_build_info{"); len(lines) != 1 || !strings.Contains(lines[0], `version="`+img.version+`"`) {
		t.Errorf("build info %q, want version %s", lines, img.version)
	}
	keys, err := srv.Client(t).Keys(t.Context(), "*").Result()
	if err != nil || len(keys) == 0 {
		t.Errorf("the compose Redis holds no key (%v): the service did not use it", err)
	}
}
