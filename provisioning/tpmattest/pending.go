package tpmattest

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/sas"
)

// DefaultChallengeTTL is how long a challenge may be answered (DESIGN §5).
const DefaultChallengeTTL = 60 * time.Second

// PendingChallenge is what the server keeps between the two legs, in a
// provisioning.ChallengeStore under ChallengeKey: the HMAC key and what the
// challenge is bound to.
type PendingChallenge struct {
	RegistrationID      string
	EKDigest, SRKDigest [sha256.Size]byte
	// Key is the HMAC key K. It is secret.
	Key     []byte
	Expires time.Time
}

// Pending returns the state to store for a challenge issued at now to
// registrationID, valid for ttl (DefaultChallengeTTL when ttl <= 0).
func (c *Challenge) Pending(registrationID string, now time.Time, ttl time.Duration) *PendingChallenge {
	if ttl <= 0 {
		ttl = DefaultChallengeTTL
	}
	return &PendingChallenge{
		RegistrationID: registrationID,
		EKDigest:       c.EKDigest,
		SRKDigest:      c.SRKDigest,
		Key:            bytes.Clone(c.Key),
		Expires:        now.Add(ttl),
	}
}

// ChallengeKey is the ChallengeStore key of the challenge pending for
// registrationID and the EK with this Key.Digest. Both legs compute it
// from the request, so a challenge can only be found by the same device
// asking again with the same EK; TakeChallenge makes it single-use.
func ChallengeKey(registrationID string, ekDigest [sha256.Size]byte) string {
	return "tpm/" + strings.ToLower(registrationID) + "/" + hex.EncodeToString(ekDigest[:])
}

// pendingVersion tags the encoding so that a broker of a later version can
// tell old entries apart (they live at most a TTL).
const pendingVersion = 1

// Marshal encodes p for ChallengeStore.PutChallenge: version, registration
// ID, both digests, the key and the expiry (Unix nanoseconds). The
// registration ID and key are length-prefixed with 16 bits; the limits of
// both (128 characters, 32 bytes) are far below that.
func (p *PendingChallenge) Marshal() []byte {
	b := make([]byte, 0, 1+2+len(p.RegistrationID)+2*sha256.Size+2+len(p.Key)+8)
	b = append(b, pendingVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.RegistrationID)))
	b = append(b, p.RegistrationID...)
	b = append(b, p.EKDigest[:]...)
	b = append(b, p.SRKDigest[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.Key)))
	b = append(b, p.Key...)
	return binary.BigEndian.AppendUint64(b, uint64(p.Expires.UnixNano()))
}

// UnmarshalPendingChallenge decodes what Marshal encoded. A value it cannot
// read is refused with CodeMalformedChallenge (a store fault: the device
// cannot cause it).
func UnmarshalPendingChallenge(b []byte) (*PendingChallenge, error) {
	bad := newError(CodeMalformedChallenge, "stored TPM challenge does not decode")
	r := reader{b: b}
	if v := r.bytes(1); v == nil || v[0] != pendingVersion {
		return nil, bad
	}
	p := &PendingChallenge{}
	if n := r.bytes(2); n != nil {
		p.RegistrationID = string(r.bytes(int(binary.BigEndian.Uint16(n))))
	}
	copy(p.EKDigest[:], r.bytes(sha256.Size))
	copy(p.SRKDigest[:], r.bytes(sha256.Size))
	if n := r.bytes(2); n != nil {
		p.Key = bytes.Clone(r.bytes(int(binary.BigEndian.Uint16(n))))
	}
	exp := r.bytes(8)
	if r.bad || len(r.b) != 0 || len(p.Key) == 0 {
		return nil, bad
	}
	p.Expires = time.Unix(0, int64(binary.BigEndian.Uint64(exp)))
	return p, nil
}

// reader reads fixed-size fields and remembers running short.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || len(r.b) < n {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// Check tells whether the second leg comes from the device the challenge
// was issued to: same registration ID (ignoring case, as registration IDs
// are), same EK and same SRK (compared in constant time), before Expires.
// The store's TTL normally removes expired entries first; Check does not
// rely on it.
func (p *PendingChallenge) Check(registrationID string, ek, srk *Key, now time.Time) error {
	switch {
	case !strings.EqualFold(p.RegistrationID, registrationID):
		return newError(CodeChallengeMismatch, "TPM challenge was issued to another registration ID")
	case ek == nil || subtle.ConstantTimeCompare(p.EKDigest[:], ek.Digest[:]) != 1:
		return newError(CodeChallengeMismatch, "TPM challenge was issued for another endorsement key")
	case srk == nil || subtle.ConstantTimeCompare(p.SRKDigest[:], srk.Digest[:]) != 1:
		return newError(CodeChallengeMismatch, "TPM challenge was issued for another storage root key")
	case !now.Before(p.Expires):
		return newError(CodeNoChallenge, "TPM challenge expired")
	}
	return nil
}

// VerifySAS checks the device's answer: a SAS token for
// "{idScope}/registrations/{RegistrationID}" signed with the challenge key.
func (p *PendingChallenge) VerifySAS(token, idScope string, now time.Time) error {
	return VerifySAS(token, p.Key, idScope, p.RegistrationID, now)
}

// String describes the pending challenge without its key.
func (p *PendingChallenge) String() string {
	return "tpmattest.PendingChallenge{RegistrationID:" + p.RegistrationID + " Key:REDACTED Expires:" +
		p.Expires.UTC().Format(time.RFC3339) + "}"
}

// GoString keeps %#v from printing the key.
func (p *PendingChallenge) GoString() string { return p.String() }

// LogValue keeps slog from printing the key.
func (p *PendingChallenge) LogValue() slog.Value {
	return slog.GroupValue(slog.String("registrationId", p.RegistrationID), slog.Time("expires", p.Expires))
}

// VerifySAS verifies a SAS token signed with the TPM-held HMAC key for
// registrationID in idScope, allowing sas.DefaultSkew. Any failure is an
// *Error with CodeBadSAS wrapping the *sas.Error, so that callers may also
// branch on sas.ErrExpired and the like.
func VerifySAS(token string, key []byte, idScope, registrationID string, now time.Time) error {
	t, err := sas.Parse(token)
	if err == nil {
		err = t.Verify(key, sas.Resource(idScope, registrationID), now, sas.DefaultSkew)
	}
	if err != nil {
		return &Error{Code: CodeBadSAS, Msg: "TPM SAS token refused", Err: err}
	}
	return nil
}
