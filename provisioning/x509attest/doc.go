// Package x509attest decides whether a device presenting an X.509
// certificate chain may be provisioned, following the DPS rules of
// precedence.
//
// The decision, in order:
//
//  1. Leaf checks that need no enrollment: within its validity (with a
//     small clock skew), an end entity (not CA:TRUE), digitalSignature when
//     a key usage is present, clientAuth when an extended key usage is
//     present, an RSA (>= 2048 bits), ECDSA P-256/P-384 or Ed25519 key, no
//     SHA-1 signature, no unknown critical extension, and a subject CN that
//     is a valid X.509 registration ID (<= 64 characters, DPS charset).
//  2. The individual enrollment of that registration ID, if one exists,
//     decides alone: enabled and holding this exact certificate (SHA-256 of
//     the DER) as primary or secondary provisions; disabled refuses, whatever
//     its attestation type (how DPS takes one device out of a group); any
//     other individual enrollment refuses as a mismatch. A self-signed
//     certificate is fine here.
//  3. Otherwise the chain is built from the leaf's issuer upward, from the
//     intermediates the device presented (in any order) and the certificates
//     enrollment groups hold (signingCertificates, and verified CA
//     certificates named by caReferences), so a device that leaves out an
//     enrolled intermediate still chains. Each link must verify: signature,
//     validity, CA:TRUE, keyCertSign, path length, CA extended key usage,
//     name constraints. The first certificate above the leaf that a group
//     references decides: enabled provisions with device ID = CN, disabled
//     refuses. Nothing found refuses. The enrolled certificate is the trust
//     anchor, so nothing above it is looked at.
//
// DecideEKChain runs the group walk of step 3 for a TPM endorsement key
// certificate instead of a TLS client certificate, over TPM enrollment
// groups only (attestation type tpm, keyed by a manufacturer CA); see its
// documentation for the rules that differ.
//
// Decide returns a Decision whose Explanation says which entry and which
// certificate decided and why; refusals carry a typed Reason and the DPS
// error code. Decide returns an error only when the enrollments could not
// be read, and callers then refuse.
//
// Performance: signature checks of (child, parent) pairs are cached by
// SHA-256, and the group certificates are indexed once per group snapshot,
// so a new device under known intermediates costs one signature
// verification (its own), and a device seen before costs none. Name
// constraints, when a CA in the chain has any, are left to the standard
// library verifier. Enrollment status is never cached here.
package x509attest
