package deploytest

// The container image as the Dockerfile describes it, without a Docker
// engine: the binary built with the Dockerfile's own go build command and
// flags (so it reports the version it is given), and the final stage's
// USER, ENV, ENTRYPOINT and HEALTHCHECK. The kubelet and Compose tests run
// this binary the way their manifests describe.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sessioncache/sessioncache/deploytest/internal/kubelet"
)

const dockerfilePath = "../Dockerfile"

// dockerImage is what the Dockerfile's final stage holds.
type dockerImage struct {
	kubelet.Image          // USER, ENV, ENTRYPOINT and the binary built
	healthcheck   []string // HEALTHCHECK CMD, in the image's paths
	version       string   // the VERSION build argument it was built with
}

// imageVersion is the version the test image is built with: the tag the
// Kubernetes base pins, so that the binary must report what the manifests
// deploy.
func imageVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kubernetesDir, "base", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+newTag:\s*"?([^"\s]+)"?\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("base/kustomization.yaml pins no image tag (images: newTag)")
	}
	return string(m[1])
}

// buildImage builds the image's binary for the test (the Go build cache
// makes the second build a link), removed when the test ends.
func buildImage(t *testing.T) *dockerImage {
	t.Helper()
	img, err := readDockerfile(imageVersion(t))
	if img != nil && img.Binary != "" {
		t.Cleanup(func() { os.RemoveAll(filepath.Dir(img.Binary)) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func readDockerfile(version string) (*dockerImage, error) {
	b, err := os.ReadFile(dockerfilePath)
	if err != nil {
		return nil, err
	}
	// Continuation lines joined.
	text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(b), "")
	var stages [][]string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], line)
	}
	if len(stages) < 2 {
		return nil, fmt.Errorf("Dockerfile: want a build stage and a final stage")
	}
	img := &dockerImage{version: version}
	args := map[string]string{"VERSION": version, "REVISION": "test-revision"}
	var build []string
	for _, line := range stages[0] {
		if cmd, ok := strings.CutPrefix(line, "RUN "); ok && strings.Contains(cmd, "go build") {
			build = shellWords(cmd)
		}
	}
	if build == nil {
		return nil, fmt.Errorf("Dockerfile: no RUN ... go build in the build stage")
	}
	for _, line := range stages[len(stages)-1] {
		instr, rest, _ := strings.Cut(line, " ")
		switch instr {
		case "USER":
			u, g, _ := strings.Cut(rest, ":")
			if img.UID, err = strconv.Atoi(u); err != nil {
				return nil, fmt.Errorf("Dockerfile: USER %q: want numeric ids, which runAsNonRoot can check", rest)
			}
			if img.GID, err = strconv.Atoi(g); err != nil {
				return nil, fmt.Errorf("Dockerfile: USER %q: want uid:gid", rest)
			}
		case "ENV":
			for _, kv := range shellWords(rest) {
				if !strings.Contains(kv, "=") {
					return nil, fmt.Errorf("Dockerfile: ENV %q: want KEY=VALUE", rest)
				}
				img.Env = append(img.Env, kv)
			}
		case "ENTRYPOINT":
			img.Entrypoint = jsonArray(rest)
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(rest, "CMD ")
			if !ok {
				return nil, fmt.Errorf("Dockerfile: HEALTHCHECK without CMD")
			}
			img.healthcheck = jsonArray(cmd)
		}
	}
	if len(img.Entrypoint) != 1 || img.healthcheck == nil || img.UID == 0 {
		return nil, fmt.Errorf("Dockerfile: want ENTRYPOINT [binary], a HEALTHCHECK and a non-root USER")
	}

	// The build command, with the build arguments filled in and the
	// output redirected.
	var env []string
	for len(build) > 0 && regexp.MustCompile(`^[A-Z_]+=`).MatchString(build[0]) {
		env = append(env, build[0])
		build = build[1:]
	}
	if len(build) < 2 || build[0] != "go" || build[1] != "build" {
		return nil, fmt.Errorf("Dockerfile: the build command %q does not start with go build", build)
	}
	dir, err := os.MkdirTemp("", "sessioncache-image-")
	if err != nil {
		return nil, err
	}
	// Readable by the unprivileged users the tests run it as.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	img.Binary = filepath.Join(dir, "sessioncache")
	cmdArgs := []string{"build"}
	for i := 2; i < len(build); i++ {
		a := regexp.MustCompile(`\$\{?([A-Z_]+)\}?`).ReplaceAllStringFunc(build[i], func(s string) string {
			return args[strings.Trim(s, "${}")]
		})
		if a == "-o" && i+1 < len(build) {
			a, i = "-o="+img.Binary, i+1
		}
		cmdArgs = append(cmdArgs, a)
	}
	cmd := exec.Command("go", cmdArgs...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return img, fmt.Errorf("go %s: %v\n%s", strings.Join(cmdArgs, " "), err, out)
	}
	return img, nil
}

// shellWords splits a command line as sh would for the simple cases a
// Dockerfile has: words separated by blanks, double or single quotes
// grouping.
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// jsonArray reads an exec-form instruction: ["a", "b"].
func jsonArray(s string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}
