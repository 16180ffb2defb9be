package clients

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func hash(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestParse: a file of public and confidential clients loads; every kind of
// mistake is refused with the line, and never shows a secret's hash.
func TestParse(t *testing.T) {
	good := "# clients\n\nweb public\n  billing   confidential " + hash("s3cret-s3cret-s3cret-s3cret-0123") + "  \n"
	r, err := Parse("clients.txt", []byte(good))
	if err != nil || r.Len() != 2 || r.IsOpen() {
		t.Fatalf("Parse: %v, %d clients", err, r.Len())
	}
	for name, tc := range map[string]struct{ data, want string }{
		"empty":         {"# nothing\n", "no client"},
		"no type":       {"web\n", "line 1"},
		"bad type":      {"web private\n", `type "private"`},
		"public secret": {"web public sha256:00\n", "line 1"},
		"no secret":     {"a public\nb confidential\n", "line 2"},
		"raw secret":    {"b confidential hunter2hunter2hunter2hunter2\n", "sha256:<64 hex digits>"},
		"short hash":    {"b confidential sha256:abcd\n", "line 1"},
		"twice":         {"a public\n\na public\n", "already on line 1"},
		"non-ASCII id":  {"zoë public\n", "printable ASCII"},
		"long id":       {strings.Repeat("c", MaxIDLen+1) + " public\n", "1 to 128"},
	} {
		_, err := Parse("clients.txt", []byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "clients.txt") {
			t.Errorf("%s: err = %v, want one naming the file and %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
}

// TestAuthenticate: public clients give no secret, confidential ones their
// own; unknown ids are refused unless the registry is open.
func TestAuthenticate(t *testing.T) {
	const secret = "s3cret-s3cret-s3cret-s3cret-0123"
	r, err := Parse("f", []byte("web public\nbilling confidential "+hash(secret)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		reg          *Registry
		id, secret   string
		given        bool
		want         error
		confidential bool
	}{
		{r, "web", "", false, nil, false},
		{r, "web", "x", true, ErrNoSecret, false},
		{r, "billing", secret, true, nil, true},
		{r, "billing", secret + "x", true, ErrBadSecret, false},
		{r, "billing", "", true, ErrSecretRequired, false},
		{r, "web", "", true, nil, false},
		{r, "billing", "", false, ErrSecretRequired, false},
		{r, "mobile", "", false, ErrUnknown, false},
		{r, "bad id", "", false, ErrUnknown, false},
		{Open(), "anything", "", false, nil, false},
		{Open(), "anything", "s", true, ErrNoSecret, false},
		{nil, "anything", "", false, nil, false},
		{Open(), "", "", false, ErrUnknown, false},
	} {
		c, err := tc.reg.Authenticate(tc.id, tc.secret, tc.given)
		if !errors.Is(err, tc.want) {
			t.Errorf("Authenticate(%q, given %v) = %v, want %v", tc.id, tc.given, err, tc.want)
			continue
		}
		if err == nil && (c.ID != tc.id || c.Confidential != tc.confidential) {
			t.Errorf("Authenticate(%q) = %+v", tc.id, c)
		}
	}
	if !r.Known("web") || r.Known("mobile") || !Open().Known("mobile") || Open().Known("a b") {
		t.Error("Known answers wrong")
	}
}
