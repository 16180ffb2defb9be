package main

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/redisstore"
)

// secretB64 is a 32-byte secret made of b, in the keys file's encoding.
func secretB64(b byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

func TestReadSigningKeys(t *testing.T) {
	dir := t.TempDir()
	good := "# rotated 2026-01-01\n\n  2 " + secretB64('b') + "  \n1\t" + secretB64('a') + "\n"
	keys, err := readSigningKeys(writeFile(t, dir, "good", good))
	if err != nil {
		t.Fatal(err)
	}
	want := []redisstore.Key{{ID: 2, Secret: bytes.Repeat([]byte{'b'}, 32)}, {ID: 1, Secret: bytes.Repeat([]byte{'a'}, 32)}}
	if d := cmp.Diff(want, keys); d != "" {
		t.Errorf("keys (-want +got):\n%s", d)
	}
	short := base64.StdEncoding.EncodeToString([]byte("thirty-one bytes of secret.....!")[:31])
	cases := []struct{ name, text, want string }{
		{"one field", "1\n", "line 1: want \"<id> <base64 secret>\""},
		{"three fields", "# c\n1 " + secretB64('a') + " extra\n", "line 2: want \"<id> <base64 secret>\""},
		{"id too large", "256 " + secretB64('a'), "line 1: key id \"256\": want a number from 0 to 255"},
		{"id with a sign", "+1 " + secretB64('a'), "key id \"+1\""},
		{"id with a leading zero", "01 " + secretB64('a'), "key id \"01\""},
		{"id twice", "1 " + secretB64('a') + "\n\n1 " + secretB64('b'), "line 3: key id 1 is already used on line 1"},
		{"secret twice", "1 " + secretB64('a') + "\n2 " + secretB64('a'), "line 2: key 2 has the same secret as the key on line 1"},
		{"short secret", "7 " + short, "line 1: key 7: the secret is 31 bytes, at least 32 required"},
		{"not base64", "1 " + strings.Repeat("!", 44), "line 1: key 1: the secret is not standard base64"},
		{"base64url", "1 " + strings.Repeat("_", 44), "not standard base64"},
		{"unpadded", "1 " + strings.TrimRight(secretB64('a'), "="), "not standard base64"},
		{"only comments", "# nothing\n\n", "no key in the file"},
		{"empty", "", "no key in the file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "-"), tc.text)
			_, err := readSigningKeys(file)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), file) {
				t.Fatalf("err = %v, want %q after the file name", err, tc.want)
			}
			for _, secret := range []string{secretB64('a'), secretB64('b'), short} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a secret", err)
				}
			}
		})
	}
	if _, err := readSigningKeys(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("a missing file was accepted")
	}
	big := strings.Repeat("# padding\n", 7000) + "1 " + secretB64('a')
	if _, err := readSigningKeys(writeFile(t, dir, "big", big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a file over 64 KiB: %v", err)
	}
}

func TestReadAPIKeys(t *testing.T) {
	dir := t.TempDir()
	keys, err := readAPIKeys(writeFile(t, dir, "good", "# gateways\nfirst-key-0123456789\n\n  second-key-0123456789\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([][]byte{[]byte("first-key-0123456789"), []byte("second-key-0123456789")}, keys); d != "" {
		t.Errorf("keys (-want +got):\n%s", d)
	}
	cases := []struct{ name, text, want string }{
		{"short", "first-key-0123456789\nshort-key\n", "line 2: the API key is 9 bytes, at least 16 required"},
		{"twice", "first-key-0123456789\nfirst-key-0123456789\n", "line 2: the same API key is on line 1"},
		{"space inside", "first key 0123456789\n", "line 1: the API key holds a space"},
		{"non-ASCII", "first-key-0123456789é\n", "non-ASCII"},
		{"too long", strings.Repeat("k", maxAPIKeyLen+1), "at most 4096"},
		{"empty", "\n# none\n", "no key in the file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAPIKeys(writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "-"), tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "first-key") {
				t.Errorf("error %q shows a key", err)
			}
		})
	}
}

func TestConfigKeyFiles(t *testing.T) {
	dir := t.TempDir()
	signing := writeFile(t, dir, "signing", "3 "+secretB64('c')+"\n0 "+secretB64('z')+"\n")
	apiKeys := writeFile(t, dir, "api", "first-key-0123456789\nsecond-key-0123456789\n")
	c, err := loadConfig([]string{"-signing-keys-file", signing}, envOf(map[string]string{envSecret: goodSecret, envAPIKeysFile: apiKeys, envListen: "0.0.0.0:8080"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.SigningKeys) != 2 || c.SigningKeys[0].ID != 3 || len(c.APIKeys) != 2 || c.APIKeysFile != apiKeys {
		t.Errorf("signing keys %v, API keys %d from %q", keyIDs(c.SigningKeys), len(c.APIKeys), c.APIKeysFile)
	}
	attrs := c.logAttrs()
	var logged strings.Builder
	for _, a := range attrs {
		logged.WriteString(strings.TrimSpace(strings.ReplaceAll(a.(interface{ String() string }).String(), "\n", " ")) + ";")
	}
	for _, want := range []string{"signing_keys=ids [3 0] from " + signing + ", 3 signs", "api_key=2 from " + envAPIKeysFile} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("start-up log %s lacks %q", logged.String(), want)
		}
	}
	if strings.Contains(logged.String(), secretB64('c')) || strings.Contains(logged.String(), "first-key") {
		t.Errorf("start-up log shows a secret: %s", logged.String())
	}

	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"signing keys without a root secret", map[string]string{envSigningKeysFile: signing}, "SESSIONCACHE_SIGNING_KEYS_FILE: needs SESSIONCACHE_SECRET or SESSIONCACHE_SECRET_FILE"},
		{"bad signing keys file", map[string]string{envSecret: goodSecret, envSigningKeysFile: writeFile(t, dir, "bad", "1 "+secretB64('a')+"\n1 "+secretB64('b'))}, "SESSIONCACHE_SIGNING_KEYS_FILE: " + filepath.Join(dir, "bad") + " line 2: key id 1 is already used on line 1"},
		{"API key and API keys file", map[string]string{envAPIKey: goodKey, envAPIKeysFile: apiKeys}, "set only one of SESSIONCACHE_API_KEY, SESSIONCACHE_API_KEY_FILE and SESSIONCACHE_API_KEYS_FILE; SESSIONCACHE_API_KEY and SESSIONCACHE_API_KEYS_FILE are set"},
		{"API key file and API keys file", map[string]string{envAPIKeyFile: apiKeys, envAPIKeysFile: apiKeys}, "set only one of"},
		{"bad API keys file", map[string]string{envAPIKeysFile: writeFile(t, dir, "badapi", "short\n")}, "SESSIONCACHE_API_KEYS_FILE: " + filepath.Join(dir, "badapi") + " line 1: the API key is 5 bytes"},
		{"no key listening widely", map[string]string{envListen: "0.0.0.0:8080"}, "Set SESSIONCACHE_API_KEY, SESSIONCACHE_API_KEY_FILE or SESSIONCACHE_API_KEYS_FILE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(nil, envOf(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Any of several API keys is accepted, on the API and on /v1/auth; keys
// swapped in take effect for the next request.
func TestSeveralAPIKeys(t *testing.T) {
	const first, second, third = "first-key-0123456789", "second-key-0123456789", "third-key-0123456789"
	e := newTestEnv(t, func(s *envSetup) { s.server.apiKeys = [][]byte{[]byte(first), []byte(second)} })
	status := func(key string) (api, gateway int) {
		h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + key}}
		api = e.send("POST", "/v1/tokens/introspect", refreshBody("sct_x"), h).status
		gateway = e.send("GET", "/v1/auth", "", http.Header{apiKeyHeader: {key}}).status
		return api, gateway
	}
	for _, tc := range []struct {
		keys        [][]byte
		key         string
		api, gwWant int
	}{
		{nil, first, http.StatusOK, http.StatusUnauthorized},
		{nil, second, http.StatusOK, http.StatusUnauthorized},
		{nil, third, http.StatusUnauthorized, http.StatusForbidden},
		{nil, first + "x", http.StatusUnauthorized, http.StatusForbidden},
		{nil, "", http.StatusUnauthorized, http.StatusForbidden},
		{[][]byte{[]byte(second), []byte(third)}, third, http.StatusOK, http.StatusUnauthorized},
		{nil, second, http.StatusOK, http.StatusUnauthorized},
		{nil, first, http.StatusUnauthorized, http.StatusForbidden},
	} {
		if tc.keys != nil {
			e.srv.setAPIKeys(tc.keys)
		}
		// /v1/auth without a token answers 401 invalid_token once the key
		// is accepted, 403 when it is not.
		if api, gw := status(tc.key); api != tc.api || gw != tc.gwWant {
			t.Errorf("key %q: API %d, /v1/auth %d; want %d, %d", tc.key, api, gw, tc.api, tc.gwWant)
		}
	}
}

// The README's example keys file is one the service accepts.
func TestReadmeSigningKeysExample(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(b), "**The signing keys file**")
	_, block, _ := strings.Cut(after, "```\n")
	example, _, ok := strings.Cut(block, "```")
	if !ok {
		t.Fatal("README.md: no example after **The signing keys file**")
	}
	keys, err := readSigningKeys(writeFile(t, t.TempDir(), "example", example))
	if err != nil {
		t.Fatalf("README.md's example: %v", err)
	}
	if d := cmp.Diff([]int{2, 1}, keyIDs(keys)); d != "" {
		t.Errorf("README.md's example key ids (-want +got):\n%s", d)
	}
}
