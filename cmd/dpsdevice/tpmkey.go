package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
)

// keyBlobPEMType is the PEM type of a key file written by "dpsdevice x509
// keygen --key-blob". The body is TPM2B_PUBLIC followed by TPM2B_PRIVATE
// (what tpm2_create writes to its -u and -r files), the private part
// wrapped by the SRK: useless without this TPM.
const keyBlobPEMType = "DPSDEVICE TPM KEY"

// Headers of a key file: the SRK the key was created under, so that a
// later run re-creates the same SRK and refuses another TPM's clearly.
const (
	hdrSRKType   = "SRK-Type"
	hdrSRKSHA256 = "SRK-SHA256" // SHA-256 of the SRK's TPM2B_PUBLIC
)

// tpmKeyRef is the parsed value of --tpm-key: a persistent handle, or a
// key file.
type tpmKeyRef struct {
	handle tpm2.TPMHandle // 0 for a file
	file   string
}

func (r tpmKeyRef) String() string {
	if r.handle != 0 {
		return fmt.Sprintf("0x%08x", uint32(r.handle))
	}
	return r.file
}

// parseTPMKeyRef reads "0x81000002" as a handle and anything else as a
// key file path.
func parseTPMKeyRef(s string) (tpmKeyRef, error) {
	if !strings.HasPrefix(s, "0x") && !strings.HasPrefix(s, "0X") {
		return tpmKeyRef{file: s}, nil
	}
	h, err := parseHandle(s)
	if err != nil {
		return tpmKeyRef{}, err
	}
	return tpmKeyRef{handle: h}, nil
}

// parseHandle parses an owner persistent handle, 0x81000000-0x817FFFFF.
func parseHandle(s string) (tpm2.TPMHandle, error) {
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil || v < 0x81000000 || v > 0x817FFFFF {
		return 0, fmt.Errorf("%q is not a persistent handle (0x81000000-0x817FFFFF)", s)
	}
	return tpm2.TPMHandle(v), nil
}

func parseKeyType(s string) (tpm.KeyType, error) {
	switch s {
	case "rsa":
		return tpm.RSA, nil
	case "ecc":
		return tpm.ECC, nil
	}
	return 0, fmt.Errorf("must be rsa or ecc, not %q", s)
}

func keyTypeName(k tpm.KeyType) string { return strings.ToLower(k.String()) }

// srkDigest identifies the SRK a key blob is wrapped by.
func srkDigest(d *tpm.Device) string {
	sum := sha256.Sum256(d.StorageRootKey())
	return hex.EncodeToString(sum[:])
}

// encodeKeyBlob is the key file of s, created under d's SRK of type srk.
func encodeKeyBlob(d *tpm.Device, srk tpm.KeyType, s *tpm.Signer) []byte {
	pub, priv := s.KeyBlobs()
	var body []byte
	body = binary.BigEndian.AppendUint16(body, uint16(len(pub)))
	body = append(body, pub...)
	body = binary.BigEndian.AppendUint16(body, uint16(len(priv)))
	body = append(body, priv...)
	return pem.EncodeToMemory(&pem.Block{
		Type:    keyBlobPEMType,
		Headers: map[string]string{hdrSRKType: keyTypeName(srk), hdrSRKSHA256: srkDigest(d)},
		Bytes:   body,
	})
}

// keyBlob is a parsed key file.
type keyBlob struct {
	srkType      tpm.KeyType
	srkSHA256    string
	public, priv []byte // TPMT_PUBLIC and TPM2B_PRIVATE contents
}

func decodeKeyBlob(name string, data []byte) (*keyBlob, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != keyBlobPEMType {
		return nil, fmt.Errorf("%s: no %q PEM block (write one with dpsdevice x509 keygen --key-blob)", name, keyBlobPEMType)
	}
	srk, err := parseKeyType(blk.Headers[hdrSRKType])
	if err != nil {
		return nil, fmt.Errorf("%s: %s header %w", name, hdrSRKType, err)
	}
	b := &keyBlob{srkType: srk, srkSHA256: blk.Headers[hdrSRKSHA256]}
	rest := blk.Bytes
	for _, dst := range []*[]byte{&b.public, &b.priv} {
		if len(rest) < 2 || len(rest)-2 < int(binary.BigEndian.Uint16(rest)) {
			return nil, fmt.Errorf("%s: truncated key blob", name)
		}
		n := int(binary.BigEndian.Uint16(rest))
		*dst, rest = rest[2:2+n], rest[2+n:]
	}
	if len(rest) != 0 || len(b.public) == 0 || len(b.priv) == 0 {
		return nil, fmt.Errorf("%s: malformed key blob", name)
	}
	return b, nil
}

// x509KeyOptions prepare the TPM for an X.509 key: the SRK of type srk (or
// the one persisted at SRKHandle). The EK is ECC because New needs one and
// ECC is quick to create; X.509 provisioning never uses it.
func x509KeyOptions(srk tpm.KeyType) tpm.Options {
	return tpm.Options{EKType: tpm.ECC, SRKType: srk}
}

// loadTPMSigner opens the TPM at path and returns the signing key ref
// names, checking a key file against the TPM's SRK first so that another
// TPM's key is refused with a clear message instead of TPM_RC_INTEGRITY
// in the middle of a TLS handshake.
func loadTPMSigner(ctx context.Context, path string, ref tpmKeyRef) (*tpm.Signer, func(), error) {
	if ref.handle != 0 {
		d, closeTPM, err := openDevice(ctx, path, x509KeyOptions(tpm.ECC))
		if err != nil {
			return nil, nil, err
		}
		s, err := d.PersistentSigner(ctx, ref.handle)
		if err != nil {
			closeTPM()
			return nil, nil, err
		}
		return s, closeTPM, nil
	}
	data, err := os.ReadFile(ref.file)
	if err != nil {
		return nil, nil, fmt.Errorf("read TPM key: %w", err)
	}
	kb, err := decodeKeyBlob(ref.file, data)
	if err != nil {
		return nil, nil, err
	}
	d, closeTPM, err := openDevice(ctx, path, x509KeyOptions(kb.srkType))
	if err != nil {
		return nil, nil, err
	}
	if srkDigest(d) != kb.srkSHA256 {
		closeTPM()
		return nil, nil, fmt.Errorf("made under another storage root key (another TPM, a TPM cleared since, or an SRK persisted at 0x%08x since); it cannot be used here",
			uint32(tpm.SRKHandle))
	}
	s, err := d.LoadSigner(kb.public, kb.priv)
	if err != nil {
		closeTPM()
		return nil, nil, err
	}
	if err := probeSigner(s); err != nil {
		closeTPM()
		return nil, nil, fmt.Errorf("the TPM refuses the key: %w", err)
	}
	return s, closeTPM, nil
}

// probeSigner signs once, so that a tampered blob fails here and not in
// the TLS handshake (where the broker would only see a broken
// connection).
func probeSigner(s *tpm.Signer) error {
	digest := sha256.Sum256([]byte("dpsdevice key probe"))
	_, err := s.Sign(nil, digest[:], crypto.SHA256)
	return err
}

// errKeyFileExists is returned when --key-blob names an existing file:
// overwriting it would lose a key.
var errKeyFileExists = errors.New("already exists; a key file is never overwritten (it would lose that key)")

// createKeyFile opens path for a new key file, refusing an existing one.
func createKeyFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("--key-blob %s %w", path, errKeyFileExists)
	}
	return f, err
}
