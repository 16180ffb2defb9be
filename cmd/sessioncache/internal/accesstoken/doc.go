// Package accesstoken issues and verifies the service's short-lived access
// tokens, and owns the keys that sign them.
//
// # Tokens
//
// An access token is a JWT access token as RFC 9068 defines it: a compact JWS
// whose protected header is {"alg", "kid", "typ": "at+jwt"} and whose claims
// are iss, sub, aud, exp, iat, jti (16 random bytes, base64url), client_id
// and sid, and, for a session bound to a DPoP key (RFC 9449), cnf with the
// key's thumbprint, jkt. It is signed with ES256 (the default: every gateway supports it)
// or EdDSA (Ed25519); never with "none" or an HMAC, and a verifier accepts
// only the one algorithm it is configured with. Untrusted tokens are parsed
// and their signatures checked by go-jose; this package only adds the checks
// RFC 9068 asks for (typ, iss, aud, exp, iat, required claims) and refuses,
// before go-jose sees it, what cannot be one of its tokens: input longer than
// MaxTokenLen, not three base64url segments, or base64url that is not in its
// one canonical form. With the ES256 rule below it gives a token exactly one
// spelling: an ECDSA signature (r, s) has a twin (r, n-s) that is just as
// valid, so Issue writes the one with s <= n/2 and Verify refuses the other.
//
// # Keys
//
// Signing keys rotate by themselves, with no operator action and no
// coordination between instances: every instance holds the store's root
// secret, and the key of epoch e = floor(unix time / Period) is derived from
// it:
//
//	seed(e) = HMAC-SHA256(secret, "sessioncache access-token signing key v1" || 0x00 || alg || 0x00 || e)
//
// with e as 8 bytes big-endian. An Ed25519 key is ed25519.NewKeyFromSeed(seed(e)).
// A P-256 key is d = (x mod (n-1)) + 1, where x is 48 bytes of
// HKDF-Expand-SHA256(seed(e), "P-256 scalar") read big-endian and n is the
// order of the curve: the method of FIPS 186-5 A.2.1, whose bias (below
// 2^-128) is negligible. The key id (kid) is the RFC 7638 thumbprint
// (SHA-256, base64url) of the public key.
//
// The key of epoch e signs during epoch e. The key set (JWKS) holds the keys
// of epochs e-1, e and e+1: a key is published a whole Period before it signs,
// so every gateway's cached copy of the set has it before its first token
// appears, and stays published a whole Period after it last signed, long after
// its last token expired. A token verifies if its kid is in the set published
// now. Strictly, a Period of max(TTL, JWKSMaxAge) would do; New refuses one
// shorter than 2 x (TTL + JWKSMaxAge), a margin for clocks of instances and
// gateways that differ and caches that keep the set a little too long.
//
// The secret is the root secret of the store (at least 32 bytes). It must be
// the same on every instance, as it already must be for the store, and so must
// Alg and Period. A change of any of the three changes every key at once:
// tokens signed before the change fail until they expire, and gateways must
// refetch the key set.
//
// # Verification cache
//
// Checking an ES256 signature costs tens of microseconds, more than the rest
// of a forward-auth request. Verify remembers the tokens it accepted, keyed by
// the SHA-256 of their text (never the text), until they expire or the
// bounded cache turns over, and answers a token it has seen from memory after
// checking exp and that its key is still published.
package accesstoken
