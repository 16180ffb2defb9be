package sessioncache_test

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The library's module stays small: a program that imports redisstore gets
// go-redis and uuid, and the module's go.mod names nothing the service or
// the benchmarks need (they are the modules cmd/ and bench/). The README's
// "Modules" table states the oldest Go and go-redis; go.mod must agree.
func TestLibraryModuleIsSmall(t *testing.T) {
	direct, goVersion := readGoMod(t, "go.mod")
	allowed := []string{
		"github.com/redis/go-redis/v9", // redisstore
		"github.com/google/uuid",       // redisstore
		"github.com/alicebob/miniredis/v2",
		"github.com/google/go-cmp",
		"github.com/anishathalye/porcupine",
	}
	for mod := range direct {
		if !slices.Contains(allowed, mod) {
			t.Errorf("go.mod requires %s directly: the library's module takes only %v; put what the service or the benchmarks need in cmd/go.mod or bench/go.mod", mod, allowed)
		}
	}

	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := func(name string) string {
		m := regexp.MustCompile(`(?m)^\| ` + name + ` \| \*\*([^*]+)\*\*`).FindSubmatch(readme)
		if m == nil {
			t.Fatalf("README.md: no %q row in the Modules table", name)
		}
		return string(m[1])
	}
	if got := row("oldest Go"); got != goVersion {
		t.Errorf("README says the library needs Go %s, go.mod says go %s", got, goVersion)
	}
	if got := row("oldest go-redis"); got != direct["github.com/redis/go-redis/v9"] {
		t.Errorf("README says go-redis %s, go.mod requires %s", got, direct["github.com/redis/go-redis/v9"])
	}
	if ci, err := os.ReadFile(".ci/run"); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(string(ci), "GOTOOLCHAIN=go"+goVersion+".") {
		t.Errorf(".ci/run does not test the library with Go %s (GOTOOLCHAIN=go%s.x)", goVersion, goVersion)
	}

	// What redisstore compiles in beyond go-redis, uuid (and what they
	// bring) and the standard library: nothing but itself, lua/ and
	// internal/tokenlayout (no imports but the standard library).
	theirs := map[string]bool{}
	for _, pkg := range goListDeps(t, "github.com/redis/go-redis/v9", "github.com/google/uuid") {
		theirs[pkg] = true
	}
	for _, pkg := range goListDeps(t, "./redisstore") {
		if !theirs[pkg] && pkg != "github.com/sessioncache/sessioncache/redisstore" && pkg != "github.com/sessioncache/sessioncache/lua" && pkg != "github.com/sessioncache/sessioncache/internal/tokenlayout" {
			t.Errorf("redisstore imports %s; it may use go-redis, uuid and the standard library", pkg)
		}
	}
}

// goListDeps returns the packages, outside the standard library, that the
// given ones are built from (themselves included).
func goListDeps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}"}, pkgs...)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

// readGoMod returns a go.mod's direct requirements (module to version) and
// its go directive.
func readGoMod(t *testing.T, path string) (map[string]string, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	direct := map[string]string{}
	var goVersion string
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "go "):
			goVersion = strings.TrimPrefix(line, "go ")
		case line == "require (":
			inBlock = true
		case inBlock && line == ")":
			inBlock = false
		case inBlock || strings.HasPrefix(line, "require "):
			fields := strings.Fields(strings.TrimPrefix(line, "require "))
			if len(fields) >= 2 && !strings.Contains(line, "// indirect") {
				direct[fields[0]] = fields[1]
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return direct, goVersion
}
