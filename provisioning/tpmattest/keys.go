package tpmattest

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/go-tpm/tpm2"
)

// MaxPublicLen caps a decoded TPM2B_PUBLIC. An RSA-4096 EK with a policy
// is about 570 bytes; anything larger is not a key we accept.
const MaxPublicLen = 1024

// Role says which key a TPM2B_PUBLIC is meant to be; it selects the checks
// and names the JSON field in messages.
type Role int

// Key roles.
const (
	RoleEK Role = iota + 1
	RoleSRK
)

func (r Role) String() string {
	switch r {
	case RoleEK:
		return "tpm.endorsementKey"
	case RoleSRK:
		return "tpm.storageRootKey"
	default:
		return "tpm key"
	}
}

// Key is a checked EK or SRK public area.
type Key struct {
	Role Role
	// TPM2B is the marshalled TPM2B_PUBLIC exactly as the device sent it.
	TPM2B []byte
	// Public is its parsed TPMT_PUBLIC.
	Public *tpm2.TPMTPublic
	// Name is the TPM Name, nameAlg ‖ H(TPMT_PUBLIC), computed here from the
	// bytes: a name sent by a device is never trusted.
	Name []byte
	// Digest is SHA-256 over TPM2B: the source of the default registration
	// ID, and what a challenge is bound to.
	Digest [sha256.Size]byte

	enc tpm2.LabeledEncapsulationKey
}

// RegistrationID is the default registration ID of a device with this EK
// (see RegistrationIDFromEK).
func (k *Key) RegistrationID() string { return registrationID(k.Digest) }

// Matches reports whether k is the EK enrolled as enrolledB64 (see
// EKMatches).
func (k *Key) Matches(enrolledB64 string) bool {
	enrolled, ok := normalizedPublic(enrolledB64)
	return ok && subtle.ConstantTimeCompare(enrolled, k.TPM2B[2:]) == 1
}

// ParseEKBase64 decodes and checks the tpm.endorsementKey of a register
// request.
func ParseEKBase64(s string) (*Key, error) { return parseBase64(s, RoleEK) }

// ParseSRKBase64 decodes and checks the tpm.storageRootKey of a register
// request.
func ParseSRKBase64(s string) (*Key, error) { return parseBase64(s, RoleSRK) }

// ParseEK checks a marshalled TPM2B_PUBLIC as an endorsement key: a
// restricted decryption key (not a signing key) bound to its TPM
// (fixedTPM, fixedParent, sensitiveDataOrigin), nameAlg SHA-256, AES-CFB
// symmetric protection, RSA 2048/3072/4096 or ECC P-256/P-384.
func ParseEK(tpm2bPublic []byte) (*Key, error) { return parse(tpm2bPublic, RoleEK) }

// ParseSRK checks a marshalled TPM2B_PUBLIC as a storage root key: the
// same rules as ParseEK, and the symmetric definition must be AES-128-CFB,
// because the SDKs import the duplicate with that definition.
func ParseSRK(tpm2bPublic []byte) (*Key, error) { return parse(tpm2bPublic, RoleSRK) }

// RegistrationIDFromEK is the default registration ID of a TPM device: the
// lowercase, unpadded RFC 4648 base32 of SHA-256 over the EK's marshalled
// TPM2B_PUBLIC, as the Node and C SDKs compute it.
func RegistrationIDFromEK(ekTPM2BPublic []byte) string {
	return registrationID(sha256.Sum256(ekTPM2BPublic))
}

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func registrationID(d [sha256.Size]byte) string { return lowerBase32.EncodeToString(d[:]) }

// EKMatches reports whether the presented EK (a register request's
// tpm.endorsementKey) is the enrolled one. Both are base64; either may be a
// TPM2B_PUBLIC or a bare TPMT_PUBLIC (some tools export the latter), and
// they are compared as TPMT_PUBLIC bytes, in constant time. A value that
// does not decode matches nothing.
func EKMatches(enrolledB64, presentedB64 string) bool {
	a, okA := normalizedPublic(enrolledB64)
	b, okB := normalizedPublic(presentedB64)
	return okA && okB && subtle.ConstantTimeCompare(a, b) == 1
}

// normalizedPublic returns the TPMT_PUBLIC bytes of base64 of a TPM2B_PUBLIC
// or of a TPMT_PUBLIC. The two cannot be confused: a TPMT_PUBLIC starts
// with its type (0x0001 RSA, 0x0023 ECC), which as a size never equals the
// rest of a real key.
func normalizedPublic(b64 string) ([]byte, bool) {
	b, err := decodeBase64(b64)
	if err != nil || len(b) < 4 || len(b) > MaxPublicLen {
		return nil, false
	}
	if int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		return b[2:], true
	}
	return b, true
}

func decodeBase64(s string) ([]byte, error) {
	if len(s) > base64.StdEncoding.EncodedLen(MaxPublicLen) {
		return nil, fmt.Errorf("longer than %d bytes", MaxPublicLen)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		// Tolerate dropped padding, as for SAS signatures.
		if b, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("not base64")
		}
	}
	return b, nil
}

func parseBase64(s string, role Role) (*Key, error) {
	if s == "" {
		return nil, newError(CodeMalformedKey, role.String()+" is missing")
	}
	b, err := decodeBase64(s)
	if err != nil {
		return nil, newError(CodeMalformedKey, role.String()+" is "+err.Error())
	}
	return parse(b, role)
}

func parse(b []byte, role Role) (*Key, error) {
	malformed := func(msg string) error { return newError(CodeMalformedKey, role.String()+": "+msg) }
	switch {
	case len(b) > MaxPublicLen:
		return nil, malformed("longer than " + strconv.Itoa(MaxPublicLen) + " bytes")
	case len(b) < 2:
		return nil, malformed("not a TPM2B_PUBLIC (too short)")
	case int(binary.BigEndian.Uint16(b)) != len(b)-2:
		return nil, malformed("not a TPM2B_PUBLIC (size " + strconv.Itoa(int(binary.BigEndian.Uint16(b))) +
			" but " + strconv.Itoa(len(b)-2) + " bytes follow)")
	}
	pub, err := decodePublic(b[2:])
	var unsupported unsupportedError
	switch {
	case errors.As(err, &unsupported):
		return nil, newError(CodeUnsupportedKey, role.String()+": "+err.Error())
	case err != nil:
		return nil, malformed(err.Error())
	}
	if err := checkPublic(pub, role); err != nil {
		return nil, newError(CodeUnsupportedKey, role.String()+": "+err.Error())
	}
	enc, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		return nil, newError(CodeUnsupportedKey, role.String()+": unusable public key")
	}
	h := sha256.Sum256(b[2:])
	k := &Key{
		Role:   role,
		TPM2B:  bytes.Clone(b),
		Public: pub,
		Name:   append([]byte{byte(tpm2.TPMAlgSHA256 >> 8), byte(tpm2.TPMAlgSHA256)}, h[:]...),
		Digest: sha256.Sum256(b),
		enc:    enc,
	}
	return k, nil
}
