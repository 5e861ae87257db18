package tpmattest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// decodePublic parses the TPMT_PUBLIC of an RSA or ECC storage-type key,
// the only shapes ParseEK and ParseSRK accept. It is hand-written rather
// than go-tpm's reflective Unmarshal because that (and the re-marshal it
// would need to prove the encoding canonical) took 70% of a challenge's
// time; here every field is read once and the whole input must be
// consumed, so the bytes the Name is computed over are exactly the key's
// encoding. Schemes other than NULL are refused here, since a restricted
// decryption key has none, which keeps the grammar small.
//
// Errors are malformed-input errors; unsupported values that parse are
// left to checkPublic, so that its messages stay precise.
func decodePublic(b []byte) (*tpm2.TPMTPublic, error) {
	r := &wireReader{b: b}
	pub := &tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgID(r.u16()),
		NameAlg: tpm2.TPMAlgID(r.u16()),
	}
	attrs := r.u32()
	policy := r.sized()
	if r.err != nil {
		return nil, r.err
	}
	if attrs&^knownObjectAttributes != 0 {
		return nil, fmt.Errorf("TPMT_PUBLIC has reserved attribute bits set (0x%08x)", attrs)
	}
	pub.ObjectAttributes = objectAttributes(attrs)
	pub.AuthPolicy = tpm2.TPM2BDigest{Buffer: policy}

	switch pub.Type {
	case tpm2.TPMAlgRSA:
		sym := r.symDef()
		scheme := r.u16()
		if r.err == nil && scheme != uint16(tpm2.TPMAlgNull) {
			return nil, unsupportedError("RSA scheme of a restricted decryption key must be NULL")
		}
		parms := &tpm2.TPMSRSAParms{
			Symmetric: sym,
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   tpm2.TPMKeyBits(r.u16()),
			Exponent:  r.u32(),
		}
		n := r.sized()
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, parms)
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
		if r.err == nil && len(n) == 0 {
			return nil, errors.New("RSA key without a modulus")
		}
	case tpm2.TPMAlgECC:
		sym := r.symDef()
		scheme := r.u16()
		curve := r.u16()
		kdf := r.u16()
		if r.err == nil && (scheme != uint16(tpm2.TPMAlgNull) || kdf != uint16(tpm2.TPMAlgNull)) {
			return nil, unsupportedError("ECC scheme and KDF of a restricted decryption key must be NULL")
		}
		x, y := r.sized(), r.sized()
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: sym,
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   tpm2.TPMECCCurve(curve),
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		})
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x},
			Y: tpm2.TPM2BECCParameter{Buffer: y},
		})
	default:
		return nil, unsupportedError(fmt.Sprintf("type must be RSA or ECC, got 0x%04x", uint16(pub.Type)))
	}
	switch {
	case r.err != nil:
		return nil, r.err
	case len(r.b) != 0:
		return nil, fmt.Errorf("TPMT_PUBLIC has %d trailing bytes", len(r.b))
	}
	return pub, nil
}

// unsupportedError is well-formed input with a value we do not take
// (another key type, a scheme); parse reports it as unsupported rather
// than malformed.
type unsupportedError string

func (e unsupportedError) Error() string { return string(e) }

// TPMA_OBJECT bits go-tpm models (Part 2 §8.3); the rest are reserved.
const (
	attrFixedTPM             = 1 << 1
	attrSTClear              = 1 << 2
	attrFixedParent          = 1 << 4
	attrSensitiveDataOrigin  = 1 << 5
	attrUserWithAuth         = 1 << 6
	attrAdminWithPolicy      = 1 << 7
	attrFirmwareLimited      = 1 << 8
	attrNoDA                 = 1 << 10
	attrEncryptedDuplication = 1 << 11
	attrRestricted           = 1 << 16
	attrDecrypt              = 1 << 17
	attrSignEncrypt          = 1 << 18
	attrX509Sign             = 1 << 19

	knownObjectAttributes = attrFixedTPM | attrSTClear | attrFixedParent | attrSensitiveDataOrigin |
		attrUserWithAuth | attrAdminWithPolicy | attrFirmwareLimited | attrNoDA | attrEncryptedDuplication |
		attrRestricted | attrDecrypt | attrSignEncrypt | attrX509Sign
)

func objectAttributes(a uint32) tpm2.TPMAObject {
	return tpm2.TPMAObject{
		FixedTPM:             a&attrFixedTPM != 0,
		STClear:              a&attrSTClear != 0,
		FixedParent:          a&attrFixedParent != 0,
		SensitiveDataOrigin:  a&attrSensitiveDataOrigin != 0,
		UserWithAuth:         a&attrUserWithAuth != 0,
		AdminWithPolicy:      a&attrAdminWithPolicy != 0,
		FirmwareLimited:      a&attrFirmwareLimited != 0,
		NoDA:                 a&attrNoDA != 0,
		EncryptedDuplication: a&attrEncryptedDuplication != 0,
		Restricted:           a&attrRestricted != 0,
		Decrypt:              a&attrDecrypt != 0,
		SignEncrypt:          a&attrSignEncrypt != 0,
		X509Sign:             a&attrX509Sign != 0,
	}
}

// wireReader reads big-endian TPM fields and keeps the first error.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = errors.New("TPMT_PUBLIC is truncated")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *wireReader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *wireReader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

// sized reads a TPM2B's contents (never nil on success, so that an empty
// buffer marshals as it was read).
func (r *wireReader) sized() []byte {
	n := r.u16()
	v := r.take(int(n))
	if v == nil && r.err == nil {
		v = []byte{}
	}
	return v
}

// symDef reads a TPMT_SYM_DEF_OBJECT: NULL, or algorithm, key bits and
// mode. Algorithms other than AES are read with the same layout (SM4 and
// Camellia share it) and refused by checkSymmetric.
func (r *wireReader) symDef() tpm2.TPMTSymDefObject {
	alg := tpm2.TPMAlgID(r.u16())
	if alg == tpm2.TPMAlgNull || r.err != nil {
		return tpm2.TPMTSymDefObject{Algorithm: alg}
	}
	bits := tpm2.TPMKeyBits(r.u16())
	mode := tpm2.TPMAlgID(r.u16())
	if alg != tpm2.TPMAlgAES {
		return tpm2.TPMTSymDefObject{Algorithm: alg}
	}
	return tpm2.TPMTSymDefObject{
		Algorithm: alg,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, bits),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, mode),
	}
}
