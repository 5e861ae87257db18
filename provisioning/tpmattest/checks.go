package tpmattest

import (
	"crypto/ecdh"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// checkPublic applies the rules of ParseEK and ParseSRK. The messages name
// the first rule broken and are safe to send to the device.
func checkPublic(pub *tpm2.TPMTPublic, role Role) error {
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("nameAlg must be SHA-256, got 0x%04x", uint16(pub.NameAlg))
	}
	if err := checkAttributes(pub.ObjectAttributes); err != nil {
		return err
	}
	var sym *tpm2.TPMTSymDefObject
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return errors.New("RSA key without RSA parameters")
		}
		n, err := pub.Unique.RSA()
		if err != nil {
			return errors.New("RSA key without a modulus")
		}
		if err := checkRSA(parms, n.Buffer); err != nil {
			return err
		}
		sym = &parms.Symmetric
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return errors.New("ECC key without ECC parameters")
		}
		pt, err := pub.Unique.ECC()
		if err != nil {
			return errors.New("ECC key without a point")
		}
		if err := checkECC(parms, pt); err != nil {
			return err
		}
		sym = &parms.Symmetric
	default:
		return fmt.Errorf("type must be RSA or ECC, got 0x%04x", uint16(pub.Type))
	}
	return checkSymmetric(sym, role)
}

// checkAttributes: a restricted decryption key that cannot leave its TPM
// and was generated in it. That is what an EK and an SRK are; a signing or
// duplicable key could be held in software.
func checkAttributes(a tpm2.TPMAObject) error {
	switch {
	case !a.FixedTPM || !a.FixedParent:
		return errors.New("key must be fixedTPM and fixedParent")
	case !a.SensitiveDataOrigin:
		return errors.New("key must be sensitiveDataOrigin (generated in the TPM)")
	case !a.Restricted || !a.Decrypt:
		return errors.New("key must be a restricted decryption key")
	case a.SignEncrypt:
		return errors.New("key must not be a signing key")
	}
	return nil
}

func checkRSA(parms *tpm2.TPMSRSAParms, n []byte) error {
	switch parms.KeyBits {
	case 2048, 3072, 4096:
	default:
		return fmt.Errorf("RSA key size must be 2048, 3072 or 4096 bits, got %d", parms.KeyBits)
	}
	// The TPM writes 0 for the default exponent 65537.
	if parms.Exponent != 0 && parms.Exponent != 65537 {
		return fmt.Errorf("RSA exponent must be 65537, got %d", parms.Exponent)
	}
	if parms.Scheme.Scheme != tpm2.TPMAlgNull {
		return errors.New("RSA scheme of a restricted decryption key must be NULL")
	}
	if len(n)*8 != int(parms.KeyBits) || n[0]&0x80 == 0 || n[len(n)-1]&1 == 0 {
		return fmt.Errorf("RSA modulus is not a %d-bit odd number", parms.KeyBits)
	}
	return nil
}

func checkECC(parms *tpm2.TPMSECCParms, pt *tpm2.TPMSECCPoint) error {
	var c ecdh.Curve
	var size int
	switch parms.CurveID {
	case tpm2.TPMECCNistP256:
		c, size = ecdh.P256(), 32
	case tpm2.TPMECCNistP384:
		c, size = ecdh.P384(), 48
	default:
		return fmt.Errorf("ECC curve must be NIST P-256 or P-384, got 0x%04x", uint16(parms.CurveID))
	}
	if parms.Scheme.Scheme != tpm2.TPMAlgNull || parms.KDF.Scheme != tpm2.TPMAlgNull {
		return errors.New("ECC scheme and KDF of a restricted decryption key must be NULL")
	}
	if len(pt.X.Buffer) != size || len(pt.Y.Buffer) != size {
		return fmt.Errorf("ECC point coordinates must be %d bytes", size)
	}
	// NewPublicKey rejects points off the curve and the point at infinity.
	uncompressed := append(append([]byte{4}, pt.X.Buffer...), pt.Y.Buffer...)
	if _, err := c.NewPublicKey(uncompressed); err != nil {
		return errors.New("ECC point is not on the curve")
	}
	return nil
}

// checkSymmetric: the credential and both wrappers are AES-CFB (go-tpm
// supports nothing else), and the SRK's must be AES-128 because the C SDK
// hard-codes {AES, 128, CFB} on import.
func checkSymmetric(sym *tpm2.TPMTSymDefObject, role Role) error {
	if sym.Algorithm != tpm2.TPMAlgAES {
		return errors.New("symmetric algorithm must be AES-CFB")
	}
	mode, err := sym.Mode.AES()
	if err != nil || *mode != tpm2.TPMAlgCFB {
		return errors.New("symmetric algorithm must be AES-CFB")
	}
	bits, err := sym.KeyBits.AES()
	if err != nil {
		return errors.New("symmetric algorithm must be AES-CFB")
	}
	switch {
	case role == RoleSRK && *bits != 128:
		return fmt.Errorf("symmetric algorithm must be AES-128-CFB, got AES-%d", *bits)
	case *bits != 128 && *bits != 256:
		return fmt.Errorf("AES key size must be 128 or 256 bits, got %d", *bits)
	}
	return nil
}
