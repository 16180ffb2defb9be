package main

// Transport security: the HTTPS listener's certificate and Redis's TLS
// client certificate, both reloaded when their files change, and the TLS
// and credentials of the Redis connection.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// certCheckInterval is how often, at most, a handshake looks at whether the
// certificate files changed.
const certCheckInterval = time.Second

// certReloader serves a certificate and key pair from files, and loads them
// again when either file changes (checked at a handshake, at most once per
// certCheckInterval, with a stat of each) or on reload. A pair that fails to
// load (half written, key and certificate that do not match) keeps the
// previous one in use, and is logged once.
type certReloader struct {
	certFile, keyFile string
	what              string // for the log: "HTTPS certificate", "Redis client certificate"
	cert              atomic.Pointer[tls.Certificate]
	nextCheck         atomic.Int64 // unix ns

	mu    sync.Mutex
	stamp fileStamp // of the files last tried, loaded or not
	// log receives reloads and failures. Set before the first handshake;
	// nil: not logged.
	log *slog.Logger
}

// fileStamp tells whether a pair of files changed.
type fileStamp [2]fileState

func (a fileStamp) same(b fileStamp) bool { return a[0].same(b[0]) && a[1].same(b[1]) }

func newCertReloader(what, certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{what: what, certFile: certFile, keyFile: keyFile}
	stamp, err := r.statFiles()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert.Store(cert)
	r.stamp = stamp
	r.nextCheck.Store(time.Now().Add(certCheckInterval).UnixNano())
	return r, nil
}

func (r *certReloader) statFiles() (fileStamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return fileStamp{}, err
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{{c}, {k}}, nil
}

func (r *certReloader) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s (%s, %s): %w", r.what, r.certFile, r.keyFile, err)
	}
	return &cert, nil
}

// current returns the pair in use, after loading the files again if they
// changed since the last look (at most once per certCheckInterval).
func (r *certReloader) current() *tls.Certificate {
	if now := time.Now(); now.UnixNano() >= r.nextCheck.Load() {
		r.mu.Lock()
		if now.UnixNano() >= r.nextCheck.Load() {
			r.nextCheck.Store(now.Add(certCheckInterval).UnixNano())
			r.check(false)
		}
		r.mu.Unlock()
	}
	return r.cert.Load()
}

// reload loads the files again whether or not they changed (SIGHUP).
func (r *certReloader) reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.check(true)
}

// check loads the pair if force or the files changed. Callers hold mu.
func (r *certReloader) check(force bool) {
	stamp, err := r.statFiles()
	if err == nil && stamp.same(r.stamp) && !force {
		return
	}
	if err != nil {
		if !stamp.same(r.stamp) || force {
			r.logError(err)
		}
		r.stamp = stamp
		return
	}
	r.stamp = stamp
	cert, err := r.load()
	if err != nil {
		r.logError(err)
		return
	}
	r.cert.Store(cert)
	if r.log != nil {
		r.log.Info(r.what+" loaded", certAttrs(cert)...)
	}
}

func (r *certReloader) logError(err error) {
	if r.log != nil {
		r.log.Error(r.what+" not reloaded: keeping the previous one", "error", err.Error())
	}
}

// certAttrs describes a certificate for the log.
func certAttrs(c *tls.Certificate) []any {
	leaf := c.Leaf
	if leaf == nil {
		return nil
	}
	return []any{
		slog.String("subject", leaf.Subject.String()),
		slog.String("dns_names", strings.Join(leaf.DNSNames, ",")),
		slog.String("not_after", leaf.NotAfter.UTC().Format(time.RFC3339)),
		slog.String("serial", leaf.SerialNumber.Text(16)),
	}
}

// serverTLSConfig is the HTTPS listener's configuration.
func (r *certReloader) serverTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.current(), nil
		},
	}
}

// redisTLS holds the settings of the Redis connection's security.
type redisTLS struct {
	fromFlag     bool   // the URL came from -redis-url
	caFile       string // trusted CAs (PEM); "": the system's
	certFile     string // client certificate (PEM)
	keyFile      string
	insecure     bool   // skip certificate verification
	usernameFile string // ACL user name
	passwordFile string
	clientCert   *certReloader // set by apply when certFile is
}

// errSkipVerify refuses a URL that turns verification off on its own.
var errSkipVerify = errors.New("skip_verify turns off the verification of Redis's certificate: set " +
	envRedisInsecure + "=true to allow it (and prefer " + envRedisCAFile + " with the CA that signed Redis's certificate)")

// apply checks the Redis security settings against the parsed URL and puts
// them into the client options: TLS trust and client certificate, user name
// and password from files. It refuses a password in a URL given as a flag,
// a password given twice, TLS settings on a URL without TLS, and turning
// verification off without envRedisInsecure.
func (s *redisTLS) apply(rawURL string, o *redisOptions) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("%s: not a URL", envRedisURL)
	}
	urlPassword := u.Query().Get("password") != "" // sentinel mode: the master's
	if pw, ok := u.User.Password(); ok && pw != "" {
		urlPassword = true
	}
	if s.fromFlag && urlPassword {
		return fmt.Errorf("-redis-url holds a password, which any local user can read in the process list: give it in a file with %s (or in %s)", envRedisPasswordFile, envRedisURL)
	}
	if rawURL == "" {
		for _, v := range []struct{ set, env string }{
			{s.caFile, envRedisCAFile}, {s.certFile, envRedisCertFile}, {s.keyFile, envRedisKeyFile},
			{s.usernameFile, envRedisUsernameFile}, {s.passwordFile, envRedisPasswordFile},
		} {
			if v.set != "" {
				return fmt.Errorf("%s is set but %s is not (the embedded miniredis needs neither)", v.env, envRedisURL)
			}
		}
		if s.insecure {
			return fmt.Errorf("%s is set but %s is not", envRedisInsecure, envRedisURL)
		}
		return nil
	}

	var tc **tls.Config
	var user, pass *string
	switch {
	case o.standalone != nil:
		tc, user, pass = &o.standalone.TLSConfig, &o.standalone.Username, &o.standalone.Password
	case o.cluster != nil:
		tc, user, pass = &o.cluster.TLSConfig, &o.cluster.Username, &o.cluster.Password
	case o.sentinel != nil:
		// The URL's user info is the sentinels'; the files hold the
		// master's credentials, as the URL's password parameter does.
		tc, user, pass = &o.sentinel.TLSConfig, &o.sentinel.Username, &o.sentinel.Password
	}

	if s.passwordFile != "" {
		if *pass != "" {
			return fmt.Errorf("%s is set and %s holds a password too: give it in one place only", envRedisPasswordFile, envRedisURL)
		}
		b, err := readSecretFile(s.passwordFile)
		if err != nil {
			return fmt.Errorf("%s: %w", envRedisPasswordFile, err)
		}
		*pass = string(b)
	}
	if s.usernameFile != "" {
		if *user != "" {
			return fmt.Errorf("%s is set and %s names a user too: give it in one place only", envRedisUsernameFile, envRedisURL)
		}
		if *pass == "" {
			return fmt.Errorf("%s needs a password: set %s", envRedisUsernameFile, envRedisPasswordFile)
		}
		b, err := readSecretFile(s.usernameFile)
		if err != nil {
			return fmt.Errorf("%s: %w", envRedisUsernameFile, err)
		}
		*user = string(b)
	}

	tlsSet := s.caFile != "" || s.certFile != "" || s.keyFile != "" || s.insecure
	if *tc == nil {
		if tlsSet {
			return fmt.Errorf("the Redis TLS settings (%s and the like) need a rediss:// URL", envRedisCAFile)
		}
		return nil
	}
	if (*tc).InsecureSkipVerify && !s.insecure {
		return errSkipVerify
	}
	cfg := (*tc).Clone()
	cfg.MinVersion = tls.VersionTLS12
	cfg.InsecureSkipVerify = s.insecure
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return fmt.Errorf("%s: %w", envRedisCAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificate in %s", envRedisCAFile, s.caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case (s.certFile == "") != (s.keyFile == ""):
		return fmt.Errorf("set both %s and %s, or neither", envRedisCertFile, envRedisKeyFile)
	case s.certFile != "":
		r, err := newCertReloader("Redis client certificate", s.certFile, s.keyFile)
		if err != nil {
			return err
		}
		s.clientCert = r
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.current(), nil
		}
	}
	*tc = cfg
	return nil
}

// readSecretFile reads a file holding one secret; a trailing newline is
// ignored.
func readSecretFile(file string) ([]byte, error) {
	b, err := readLimited(file)
	if err != nil {
		return nil, err
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(b) == 0 {
		return nil, fmt.Errorf("%s: the file is empty", file)
	}
	return b, nil
}

// tlsState names what a client options' TLS does, for the start-up log.
func (o redisOptions) tlsState() string {
	var c *tls.Config
	switch {
	case o.standalone != nil:
		c = o.standalone.TLSConfig
	case o.cluster != nil:
		c = o.cluster.TLSConfig
	case o.sentinel != nil:
		c = o.sentinel.TLSConfig
	default:
		return "off"
	}
	switch {
	case c == nil:
		return "off"
	case c.InsecureSkipVerify:
		return "on, certificate NOT verified"
	case c.RootCAs != nil:
		return "on, verified against " + envRedisCAFile
	}
	return "on, verified against the system's CAs"
}
