package tpm

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// NV indices of EK certificates (TCG EK Credential Profile).
const (
	RSAEKCertIndex tpm2.TPMHandle = 0x01c00002 // RSA-2048 EK
	ECCEKCertIndex tpm2.TPMHandle = 0x01c0000a // ECC P-256 EK
	// ECCP384EKCertIndex is the high-range ECC P-384 EK certificate;
	// swtpm_setup writes its ECC EK certificate there.
	ECCP384EKCertIndex tpm2.TPMHandle = 0x01c00016
)

// maxNVSize bounds what ReadNV reads; EK certificates are 1-2 KB.
const maxNVSize = 16 * 1024

// ReadNV reads a whole NV index in chunks the TPM accepts (its
// TPM_PT_NV_BUFFER_MAX), authorising as the owner, or with the index's
// own empty auth if the owner may not read it.
func (d *Device) ReadNV(ctx context.Context, index tpm2.TPMHandle) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rp, err := (tpm2.NVReadPublic{NVIndex: index}).Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: NV 0x%08x: %w", uint32(index), err)
	}
	nvPub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: NV 0x%08x public area: %w", uint32(index), err)
	}
	size := int(nvPub.DataSize)
	if size > maxNVSize {
		return nil, fmt.Errorf("tpm: NV 0x%08x holds %d bytes, more than %d", uint32(index), size, maxNVSize)
	}
	chunk := d.nvBufferMax()
	nv := tpm2.NamedHandle{Handle: index, Name: rp.NVName}
	auth := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	if !nvPub.Attributes.OwnerRead && nvPub.Attributes.AuthRead {
		auth = tpm2.AuthHandle{Handle: index, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)}
	}
	out := make([]byte, 0, size)
	for len(out) < size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(chunk, size-len(out))
		r, err := tpm2.NVRead{AuthHandle: auth, NVIndex: nv, Size: uint16(n), Offset: uint16(len(out))}.Execute(d.tpm)
		if err != nil {
			return nil, fmt.Errorf("tpm: NV 0x%08x read at %d: %w", uint32(index), len(out), err)
		}
		if len(r.Data.Buffer) == 0 {
			return nil, fmt.Errorf("tpm: NV 0x%08x read at %d: no data", uint32(index), len(out))
		}
		out = append(out, r.Data.Buffer...)
	}
	return out[:size], nil
}

// nvBufferMax asks the TPM for its NV I/O limit; 512 if it will not say
// (every TPM takes that much).
func (d *Device) nvBufferMax() int {
	const fallback = 512
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}.Execute(d.tpm)
	if err != nil {
		return fallback
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return fallback
	}
	if v := int(props.TPMProperty[0].Value); v >= 64 && v <= 4096 {
		return v
	}
	return fallback
}

// EKCertificate reads and parses the EK certificate at index
// (RSAEKCertIndex, ECCEKCertIndex or ECCP384EKCertIndex).
func (d *Device) EKCertificate(ctx context.Context, index tpm2.TPMHandle) (*x509.Certificate, error) {
	b, err := d.ReadNV(ctx, index)
	if err != nil {
		return nil, err
	}
	return ParseEKCertificate(b)
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// ParseEKCertificate parses an EK certificate as stored in NV: it drops
// padding after the DER (some TPMs pad the index), and accepts the
// critical subjectAltName holding the TPM's directoryName (manufacturer,
// model, version), which crypto/x509 otherwise leaves unhandled and
// Verify refuses. Every other unhandled critical extension stays.
func ParseEKCertificate(b []byte) (*x509.Certificate, error) {
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(b, &raw)
	if err != nil {
		return nil, fmt.Errorf("tpm: EK certificate: %w", err)
	}
	if len(rest) != 0 && slices.ContainsFunc(rest, func(c byte) bool { return c != 0 && c != 0xff }) {
		return nil, errors.New("tpm: EK certificate: data after the certificate")
	}
	cert, err := x509.ParseCertificate(b[:len(b)-len(rest)])
	if err != nil {
		return nil, fmt.Errorf("tpm: EK certificate: %w", err)
	}
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions, func(oid asn1.ObjectIdentifier) bool {
		return oid.Equal(oidSubjectAltName)
	})
	return cert, nil
}
