package tpmattest

import (
	"encoding/base64"
	"encoding/binary"
	"strconv"
)

// Blob is an authenticationKey split into its six TPM2B structures
// (PROTOCOL.md §4.4). Each field holds the structure's contents without
// its 2-byte size.
type Blob struct {
	IDObject   []byte // TPM2B_ID_OBJECT: the credential, activated with the EK
	EncSecret  []byte // TPM2B_ENCRYPTED_SECRET: its seed, encrypted to the EK
	Duplicate  []byte // TPM2B_PRIVATE: the HMAC key, imported under the SRK
	InSymSeed  []byte // TPM2B_ENCRYPTED_SECRET: the outer seed, encrypted to the SRK
	Public     []byte // TPMT_PUBLIC of the HMAC key (the TPM2B_PUBLIC's contents)
	EncURIData []byte // TPM2B_DATA: encUriData; empty in blobs made here
}

// MaxBlobLen caps a decoded authenticationKey. With RSA-4096 keys a blob is
// about 1.3 KB.
const MaxBlobLen = 4096

// Encode returns the base64 authenticationKey.
func (b *Blob) Encode() string {
	parts := b.parts()
	n := 0
	for _, p := range parts {
		n += 2 + len(*p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = appendTPM2B(out, *p)
	}
	return base64.StdEncoding.EncodeToString(out)
}

func (b *Blob) parts() [6]*[]byte {
	return [6]*[]byte{&b.IDObject, &b.EncSecret, &b.Duplicate, &b.InSymSeed, &b.Public, &b.EncURIData}
}

// ParseBlob splits a base64 authenticationKey into its six structures. It
// checks only the framing: six size-prefixed parts, nothing after them. The
// TPM checks the rest.
func ParseBlob(authenticationKey string) (*Blob, error) {
	if len(authenticationKey) > base64.StdEncoding.EncodedLen(MaxBlobLen) {
		return nil, newError(CodeMalformedChallenge, "authenticationKey longer than "+strconv.Itoa(MaxBlobLen)+" bytes")
	}
	raw, err := base64.StdEncoding.DecodeString(authenticationKey)
	if err != nil {
		return nil, newError(CodeMalformedChallenge, "authenticationKey is not base64")
	}
	b := &Blob{}
	for i, p := range b.parts() {
		if len(raw) < 2 {
			return nil, newError(CodeMalformedChallenge, "authenticationKey ends before part "+strconv.Itoa(i+1))
		}
		n := int(binary.BigEndian.Uint16(raw))
		if len(raw)-2 < n {
			return nil, newError(CodeMalformedChallenge, "authenticationKey part "+strconv.Itoa(i+1)+" is truncated")
		}
		*p, raw = raw[2:2+n:2+n], raw[2+n:]
	}
	if len(raw) != 0 {
		return nil, newError(CodeMalformedChallenge, "authenticationKey has "+strconv.Itoa(len(raw))+" bytes after part 6")
	}
	return b, nil
}

// appendTPM2B appends BE16(len b) ‖ b. Callers pass parts far below 64 KiB.
func appendTPM2B(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}
