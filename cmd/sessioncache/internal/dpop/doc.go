// Package dpop verifies DPoP proofs (RFC 9449): the JWTs a client signs
// with its own key for each request, so that a token bound to that key is
// useless to whoever copies it without the key.
//
// # Proofs
//
// Verifier.Verify runs the checks of RFC 9449 section 4.3 that need no
// state: exactly one DPoP header; at most MaxProofLen bytes, refused before
// anything is parsed; a compact JWS, parsed and its signature checked by
// go-jose, never by code of ours; typ "dpop+jwt"; an asymmetric algorithm
// of Algorithms (never "none" or an HMAC); the public key in the jwk header
// (go-jose refuses private parameters), RSA keys of MinRSABits to
// MaxRSABits bits only, no certificates; htm equal to the request's method
// and htu equal to its URI, both sides normalised by NormalizeURI (section
// 4.3's syntax- and scheme-based normalisation, query and fragment
// dropped); iat no more than Window in the past nor Leeway in the future;
// ath, the SHA-256 of the access token, when one is presented (step 10);
// and, when the deployment asks for server nonces (section 8), a nonce
// that Nonces issued. It returns the key's RFC 7638 thumbprint (jkt), which
// the caller compares with the one the token or session is bound to.
//
// The one check that needs state, that the proof's jti was not seen in its
// window (step 11), is Replays.Check: one Redis command per proof.
//
// # One clock
//
// Every instance judges iat and nonces by Redis's clock, not its own
// (Clock): instances whose clocks differ accept the same proofs, and the
// replay cache, whose entries expire by Redis's clock, remembers a jti for
// as long as any instance would accept its proof.
package dpop
