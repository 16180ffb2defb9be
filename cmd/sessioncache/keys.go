package main

// Signing keys and API keys that can be rotated without a restart: both are
// read from files at start, again when a new file replaces one (rename-only
// loading, see keyFile.check), and on SIGHUP. A file that fails to load
// changes nothing: the previous keys stay in force.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/cmd/sessioncache/internal/clients"
	"github.com/sessioncache/sessioncache/redisstore"
)

// Limits of the key files.
const (
	maxKeyFileBytes = 64 << 10
	maxAPIKeyLen    = 4096
)

// readSigningKeys reads a signing keys file: one key per line, "<id>
// <secret>", the id a number from 0 to 255 that tokens carry, the secret
// standard base64 (as openssl rand -base64 32 prints it) of at least 32
// bytes. Blank lines and lines starting with # are ignored. The first key
// signs new tokens; every key listed verifies. Errors name the file and the
// line, never a secret.
func readSigningKeys(file string) ([]redisstore.Key, error) {
	lines, err := readKeyFile(file)
	if err != nil {
		return nil, err
	}
	var keys []redisstore.Key
	seen := map[string]int{} // secret -> line
	var lineOf [256]int
	for _, l := range lines {
		fields := strings.Fields(l.text)
		if len(fields) != 2 {
			return nil, l.errorf("want \"<id> <base64 secret>\", such as \"1 $(openssl rand -base64 32)\"; got %d fields", len(fields))
		}
		id, err := strconv.ParseUint(fields[0], 10, 8)
		if err != nil || fields[0] != strconv.FormatUint(id, 10) {
			return nil, l.errorf("key id %q: want a number from 0 to 255", fields[0])
		}
		if prev := lineOf[id]; prev != 0 {
			return nil, l.errorf("key id %d is already used on line %d", id, prev)
		}
		secret, err := base64.StdEncoding.Strict().DecodeString(fields[1])
		if err != nil {
			return nil, l.errorf("key %d: the secret is not standard base64 (openssl rand -base64 32)", id)
		}
		if len(secret) < redisstore.MinSecretLen {
			return nil, l.errorf("key %d: the secret is %d bytes, at least %d required (openssl rand -base64 32)", id, len(secret), redisstore.MinSecretLen)
		}
		if prev, ok := seen[string(secret)]; ok {
			return nil, l.errorf("key %d has the same secret as the key on line %d", id, prev)
		}
		lineOf[id], seen[string(secret)] = l.n, l.n
		keys = append(keys, redisstore.Key{ID: byte(id), Secret: secret})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key in the file", file)
	}
	return keys, nil
}

// readAPIKeys reads an API keys file: one key per line, any of which is
// accepted. Blank lines and lines starting with # are ignored, and so is
// white space around a key; a key is at least 16 bytes of printable ASCII
// without spaces. Errors name the file and the line, never a key.
func readAPIKeys(file string) ([][]byte, error) {
	lines, err := readKeyFile(file)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	seen := map[string]int{}
	for _, l := range lines {
		k := l.text
		switch {
		case len(k) < minAPIKeyLen:
			return nil, l.errorf("the API key is %d bytes, at least %d required", len(k), minAPIKeyLen)
		case len(k) > maxAPIKeyLen:
			return nil, l.errorf("the API key is %d bytes, at most %d allowed", len(k), maxAPIKeyLen)
		case strings.IndexFunc(k, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
			return nil, l.errorf("the API key holds a space, a control character or a non-ASCII character")
		}
		if prev, ok := seen[k]; ok {
			return nil, l.errorf("the same API key is on line %d", prev)
		}
		seen[k] = l.n
		keys = append(keys, []byte(k))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key in the file", file)
	}
	return keys, nil
}

// readAPIKeyFile reads SESSIONCACHE_API_KEY_FILE: the whole file is one key,
// a trailing newline ignored.
func readAPIKeyFile(file string) ([][]byte, error) {
	b, err := readLimited(file)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, "\r\n")
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("%s: the file is empty", file)
	case len(b) < minAPIKeyLen:
		return nil, fmt.Errorf("%s: the API key is %d bytes, at least %d required", file, len(b), minAPIKeyLen)
	}
	return [][]byte{b}, nil
}

// readClients reads SESSIONCACHE_CLIENTS_FILE (see package clients).
func readClients(file string) (*clients.Registry, error) {
	b, err := readLimited(file)
	if err != nil {
		return nil, err
	}
	return clients.Parse(file, b)
}

// keyLine is a line of a key file that holds a key.
type keyLine struct {
	file string
	n    int // from 1
	text string
}

func (l keyLine) errorf(format string, args ...any) error {
	return fmt.Errorf("%s line %d: %s", l.file, l.n, fmt.Sprintf(format, args...))
}

// readKeyFile returns the lines of file that are neither blank nor
// comments, trimmed.
func readKeyFile(file string) ([]keyLine, error) {
	b, err := readLimited(file)
	if err != nil {
		return nil, err
	}
	var out []keyLine
	for i, text := range strings.Split(string(b), "\n") {
		text = strings.TrimSpace(text)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		out = append(out, keyLine{file: file, n: i + 1, text: text})
	}
	return out, nil
}

func readLimited(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", file, maxKeyFileBytes)
	}
	return b, nil
}

// keyCheckInterval is how often the service looks at whether a key file
// changed: a stat of each.
const keyCheckInterval = time.Second

// keyFile is a key file that is read again when a new file replaces it.
type keyFile struct {
	name string
	kind string // the file label of its metrics: signing_keys, api_keys, clients
	// load reads the file and puts its keys in force, or changes nothing
	// and returns why; cause is "changed" or "hangup", for the log.
	load    func(file, cause string) error
	failed  string // the log message of a file that does not load
	log     *slog.Logger
	metrics *metrics
	loaded  fileState // the file as last read (or refused), whether it loaded or not
	seen    fileState // the file at the last look
	looks   atomic.Int64
}

// errInPlace refuses a key file written in place: it may be read half
// written (a writer that stalls), so only a new file is loaded.
var errInPlace = errors.New("the file was written in place, not loaded: write a new file and rename it over this one " +
	"(as Kubernetes, mv and most tools do), or send SIGHUP once it is complete")

// check reads the file if a new file replaced it (rename-only loading): its
// identity (device and inode, which the swap of a Kubernetes Secret
// volume's ..data link changes too) differs from the one last read, and it
// stood still since the last look, one keyCheckInterval ago. A change to
// the file last read, in place, is never loaded, however long its writer
// stalls: it is refused (logged and counted once per change). A removed
// file is refused too, the keys in force stay.
func (f *keyFile) check() {
	defer f.looks.Add(1)
	now := statFile(f.name)
	settled := now.same(f.seen)
	f.seen = now
	if !settled || now.same(f.loaded) {
		return
	}
	if now.sameFile(f.loaded) {
		f.loaded = now
		f.refused("changed", errInPlace)
		return
	}
	f.read(now, "changed")
}

// read loads the file, whose stat (taken before reading) is state.
func (f *keyFile) read(state fileState, cause string) {
	f.loaded, f.seen = state, state
	if err := f.load(f.name, cause); err != nil {
		f.refused(cause, err)
		return
	}
	f.metrics.keysReloaded.WithLabelValues(f.kind).SetToCurrentTime()
}

// refused reports a reload that changed nothing.
func (f *keyFile) refused(cause string, err error) {
	f.log.Error(f.failed, "file", f.name, "cause", cause, "error", err.Error())
	f.metrics.keyReloadErrors.WithLabelValues(f.kind).Inc()
}

// reloader re-reads what can change without a restart: the signing keys
// and the API keys when their files change (checkFiles) and on SIGHUP
// (reload), and the certificates on SIGHUP (they are also looked at on
// their own, see certReloader). Each is replaced only by a complete, valid
// new set; on any error the previous one stays. Its methods are called
// from one goroutine.
type reloader struct {
	s     *server
	rdb   redis.UniversalClient
	opt   redisstore.Options // the store's options; Keys is replaced
	files []*keyFile
	certs []*certReloader
	log   *slog.Logger
}

func newReloader(cfg *config, s *server, rdb redis.UniversalClient, opt redisstore.Options, log *slog.Logger) *reloader {
	r := &reloader{s: s, rdb: rdb, opt: opt, log: log}
	if cfg.SigningKeysFile != "" {
		r.files = append(r.files, &keyFile{name: cfg.SigningKeysFile, kind: "signing_keys", load: r.reloadSigningKeys, log: log,
			failed: "signing keys not reloaded: keeping the previous ones", loaded: cfg.signingKeysState, seen: cfg.signingKeysState})
	}
	if cfg.ClientsFile != "" {
		r.files = append(r.files, &keyFile{name: cfg.ClientsFile, kind: "clients", log: log,
			failed: "clients not reloaded: keeping the previous ones", loaded: cfg.clientsState, seen: cfg.clientsState,
			load: func(file, cause string) error {
				reg, err := readClients(file)
				if err != nil {
					return err
				}
				r.s.clients.Store(reg)
				r.log.Info("clients reloaded", "file", file, "cause", cause, "clients", reg.Len())
				return nil
			}})
	}
	if cfg.APIKeysFile != "" {
		read := cfg.apiKeysRead
		r.files = append(r.files, &keyFile{name: cfg.APIKeysFile, kind: "api_keys", log: log,
			failed: "API keys not reloaded: keeping the previous ones", loaded: cfg.apiKeysState, seen: cfg.apiKeysState,
			load: func(file, cause string) error {
				keys, err := read(file)
				if err != nil {
					return err
				}
				r.s.setAPIKeys(keys)
				r.log.Info("API keys reloaded", "file", file, "cause", cause, "keys", len(keys))
				return nil
			}})
	}
	// Each file loaded at start.
	for _, f := range r.files {
		f.metrics = s.metrics
		f.metrics.keyReloadErrors.WithLabelValues(f.kind)
		f.metrics.keysReloaded.WithLabelValues(f.kind).SetToCurrentTime()
	}
	return r
}

// reload re-reads every key file and certificate (SIGHUP), changed or not,
// in place or not: the operator who sends it says the files are complete.
// A file is still checked as a whole (syntax, lengths) before it is put in
// force: a key cut short of its minimum length is refused.
func (r *reloader) reload() {
	r.log.Info("received hangup: re-reading keys and certificates")
	for _, f := range r.files {
		f.read(statFile(f.name), "hangup")
	}
	for _, c := range r.certs {
		c.reload()
	}
}

// checkFiles re-reads the key files that changed (see keyFile.check).
func (r *reloader) checkFiles() {
	for _, f := range r.files {
		f.check()
	}
}

// reloadSigningKeys builds a store with the keys of file and swaps it in:
// requests in flight finish on the previous store.
func (r *reloader) reloadSigningKeys(file, cause string) error {
	keys, err := readSigningKeys(file)
	if err != nil {
		return err
	}
	opt := r.opt
	opt.Keys = keys
	st, err := redisstore.New(r.rdb, opt)
	if err != nil {
		return err
	}
	r.s.setStore(st)
	r.log.Info("signing keys reloaded", "file", file, "cause", cause, "key_ids", keyIDs(keys), "signing_key_id", keys[0].ID)
	return nil
}

// keyIDs lists the ids of keys, the signing key first.
func keyIDs(keys []redisstore.Key) []int {
	ids := make([]int, len(keys))
	for i, k := range keys {
		ids[i] = int(k.ID)
	}
	return ids
}
