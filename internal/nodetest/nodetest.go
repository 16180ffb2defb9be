// Package nodetest runs code nobody here wrote, npm packages on the
// machine's Node.js, for interoperability tests: a test keeps a directory
// of testdata with a package.json, its package-lock.json and the scripts
// that use the packages; Install installs the locked packages next to a
// copy of the scripts, and Run runs one script with JSON in and JSON out.
//
// Without node or npm, or with a Node.js older than MinNodeMajor, a test
// is skipped with a message, or fails under SESSIONCACHE_TEST_REQUIRE_REAL=1
// (as CI sets it).
package nodetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessioncache/sessioncache/internal/redistest"
)

// MinNodeMajor is the oldest Node.js the scripts run on: the packages they
// use (jose 6, oauth4webapi 3) need the global Web Crypto of Node.js 20.
const MinNodeMajor = 20

// Install installs the locked dependencies of dir (a testdata directory
// with package.json and package-lock.json) with npm ci, once, into a
// directory of the user's cache named after dir and the hash of its
// files, with a copy of every file of dir beside them (so that a change
// of the lock or of a script installs afresh), and returns that directory.
// npm runs no install scripts.
func Install(t testing.TB, dir string) string {
	t.Helper()
	requireNode(t)
	npm := requireTool(t, "npm", "apt-get install npm, or the npm that comes with Node.js")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	contents := map[string][]byte{}
	var names []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue // node_modules of a hand-run npm install, say
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		contents[e.Name()] = b
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		h.Write([]byte(name + "\x00"))
		h.Write(contents[name])
		h.Write([]byte{0})
	}
	if contents["package-lock.json"] == nil {
		t.Fatalf("%s has no package-lock.json: npm ci installs only what a lock names", dir)
	}
	root, err := os.UserCacheDir()
	if err != nil {
		root = os.TempDir()
	}
	parent := filepath.Join(root, "sessioncache-test")
	installed := filepath.Join(parent, filepath.Base(dir)+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	// Only a finished install is renamed into place.
	if _, err := os.Stat(installed); err == nil {
		return installed
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(parent, "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for name, b := range contents {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in a copy of %s: %v\n%s", dir, err, out)
	}
	// Another test process may have won the race: either copy will do.
	if err := os.Rename(tmp, installed); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, statErr := os.Stat(installed); statErr != nil {
			t.Fatal(err)
		}
	}
	return installed
}

// Run runs script, a file of the directory Install returned, with node,
// in as JSON on its standard input (never on its command line, where
// other users' ps would see tokens), and decodes its standard output, one
// JSON value, into out. The script's standard error is shown if it fails.
func Run(t testing.TB, dir, script string, in, out any) {
	t.Helper()
	input, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, script))
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(input)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("node %s printed %q: %v\n%s", script, b, err, stderr.String())
	}
}

// requireNode skips (or fails) the test unless node is on PATH and at
// least MinNodeMajor.
func requireNode(t testing.TB) {
	t.Helper()
	node := requireTool(t, "node", "Node.js "+strconv.Itoa(MinNodeMajor)+" or later")
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	v := strings.TrimSpace(string(out))
	major, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	if n, err := strconv.Atoi(major); err != nil || n < MinNodeMajor {
		unavailable(t, "node is "+v+", older than the "+strconv.Itoa(MinNodeMajor)+" these tests need")
	}
}

// requireTool returns the path of a program, or skips the test.
func requireTool(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, name+" is not installed ("+install+")")
	}
	return p
}

// unavailable skips the test, or fails it under
// SESSIONCACHE_TEST_REQUIRE_REAL=1.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(redistest.EnvRequireReal) == "1" {
		t.Fatalf("%s (%s=1)", msg, redistest.EnvRequireReal)
	}
	t.Skip(msg)
}
