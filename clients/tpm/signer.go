package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// signerTemplate is an ECDSA P-256 signing key that never leaves the TPM
// (fixedTPM, fixedParent, generated inside). The scheme is left NULL so
// that Sign can follow the hash TLS asks for.
var signerTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID:   tpm2.TPMECCNistP256,
		KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// Signer is a TPM-resident ECDSA P-256 key under the SRK, usable as the
// private key of a TLS client certificate (tls.Certificate.PrivateKey).
// The private part exists outside the TPM only wrapped by the SRK
// (KeyBlobs), so it is bound to this TPM.
type Signer struct {
	d               *Device
	public, private []byte // TPMT_PUBLIC contents, TPM2B_PRIVATE contents
	name            tpm2.TPM2BName
	pub             *ecdsa.PublicKey
	// persistent: the key lives at handle (PersistSigner), so Sign uses
	// it there instead of loading the blobs.
	persistent bool
	handle     tpm2.TPMHandle
}

// NewSigner creates a new signing key in the TPM. Keep its KeyBlobs to
// use the same key after a restart (LoadSigner).
func (d *Device) NewSigner(ctx context.Context) (*Signer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := tpm2.Create{ParentHandle: d.srkAuth(), InPublic: tpm2.New2B(signerTemplate)}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: create signing key: %w", err)
	}
	return d.signer(c.OutPublic.Bytes(), c.OutPrivate.Buffer)
}

// LoadSigner returns the signing key saved with KeyBlobs. The TPM checks
// the blobs when the key is first used.
func (d *Device) LoadSigner(public, private []byte) (*Signer, error) {
	return d.signer(public, private)
}

func (d *Device) signer(public, private []byte) (*Signer, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return nil, fmt.Errorf("tpm: signing key public area: %w", err)
	}
	if pub.Type != tpm2.TPMAlgECC || !pub.ObjectAttributes.SignEncrypt {
		return nil, errors.New("tpm: signing key is not an ECC signing key")
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("tpm: signing key: %w", err)
	}
	pt, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("tpm: signing key: %w", err)
	}
	ecPub, err := tpm2.ECDSAPub(parms, pt)
	if err != nil {
		return nil, fmt.Errorf("tpm: signing key: %w", err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: signing key: %w", err)
	}
	return &Signer{d: d, public: public, private: private, name: *name, pub: ecPub}, nil
}

// KeyBlobs returns the key's public area and its SRK-wrapped private part,
// for LoadSigner. They are useless without this TPM's SRK. A key found by
// PersistentSigner has no private blob (nil).
func (s *Signer) KeyBlobs() (public, private []byte) {
	return append([]byte(nil), s.public...), append([]byte(nil), s.private...)
}

// Public returns the *ecdsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest in the TPM (TPM2_Sign, ECDSA with opts' hash) and
// returns an ASN.1 DER signature, as crypto/ecdsa does. rand is unused:
// the TPM draws its own nonce.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	alg, err := hashAlg(opts.HashFunc())
	if err != nil {
		return nil, err
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("tpm: digest is %d bytes, %v needs %d", len(digest), opts.HashFunc(), opts.HashFunc().Size())
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	key := tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(nil)}
	if !s.persistent {
		o, err := d.loadUnderSRK(s.public, s.private)
		if err != nil {
			return nil, fmt.Errorf("tpm: load signing key: %w", err)
		}
		defer d.flush(&o)
		key.Handle, key.Name = o.handle, o.name
	}
	rsp, err := tpm2.Sign{
		KeyHandle: key,
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: alg}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: sign: %w", err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("tpm: sign: %w", err)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.SignatureR.Buffer),
		new(big.Int).SetBytes(sig.SignatureS.Buffer),
	})
}

func hashAlg(h crypto.Hash) (tpm2.TPMIAlgHash, error) {
	switch h {
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	default:
		return 0, fmt.Errorf("tpm: cannot sign with hash %v", h)
	}
}

// CertificateRequest returns a DER PKCS #10 request for the key with
// subject CN commonName (for X.509 devices, the registration ID).
func (s *Signer) CertificateRequest(commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:            pkix.Name{CommonName: commonName},
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}, s)
	if err != nil {
		return nil, fmt.Errorf("tpm: certificate request: %w", err)
	}
	return der, nil
}

// SelfSignedCertificate returns a self-signed client certificate for the
// key, subject CN commonName, valid from notBefore to notAfter (tests,
// and X.509 individual enrollments by thumbprint).
func (s *Signer) SelfSignedCertificate(commonName string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tpm: certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.pub, s)
	if err != nil {
		return nil, fmt.Errorf("tpm: self-signed certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}
