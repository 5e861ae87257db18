package tpm

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Owner-hierarchy persistent handles (TPM 2.0 Part 2, 2.3.1; the TCG
// handle registry leaves 0x81000000-0x817FFFFF to the owner).
const (
	firstOwnerPersistent tpm2.TPMHandle = 0x81000000
	lastOwnerPersistent  tpm2.TPMHandle = 0x817FFFFF
)

// ErrHandleInUse is returned by PersistSigner when something is already
// persisted at the handle. Nothing is evicted implicitly: the handle may
// hold an EK, an SRK or another device's key.
var ErrHandleInUse = errors.New("tpm: persistent handle already in use")

// PersistSigner makes s persistent at handle h in the owner hierarchy
// (empty owner password), so that the key survives restarts without its
// blobs: PersistentSigner(h) finds it again. h must be a free
// owner persistent handle (0x81000000-0x817FFFFF); an occupied one is
// refused with ErrHandleInUse. After success s signs through h.
func (d *Device) PersistSigner(ctx context.Context, s *Signer, h tpm2.TPMHandle) error {
	if h < firstOwnerPersistent || h > lastOwnerPersistent {
		return fmt.Errorf("tpm: 0x%08x is not an owner persistent handle (0x81000000-0x817FFFFF)", uint32(h))
	}
	if s == nil || s.d != d {
		return errors.New("tpm: PersistSigner needs a signer of this Device")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.persistent {
		return fmt.Errorf("tpm: signing key is already persistent at 0x%08x", uint32(s.handle))
	}
	if _, err := (tpm2.ReadPublic{ObjectHandle: h}).Execute(d.tpm); err == nil {
		return fmt.Errorf("%w: 0x%08x (evict it first, e.g. tpm2_evictcontrol -C o -c 0x%08x)", ErrHandleInUse, uint32(h), uint32(h))
	} else if !errors.Is(err, tpm2.TPMRCHandle) {
		return fmt.Errorf("tpm: read public 0x%08x: %w", uint32(h), err)
	}
	o, err := d.loadUnderSRK(s.public, s.private)
	if err != nil {
		return fmt.Errorf("tpm: load signing key: %w", err)
	}
	defer d.flush(&o)
	if err := d.persist(&o, h); err != nil {
		return fmt.Errorf("tpm: signing key: %w", err)
	}
	s.persistent, s.handle = true, h
	d.log.Debug("tpm: signing key persisted", "handle", fmt.Sprintf("0x%08x", uint32(h)))
	return nil
}

// PersistentSigner returns the signing key persisted at h by
// PersistSigner (or any tool that persisted an unrestricted ECC P-256
// signing key created inside a TPM). It refuses a key that is not fixed
// to the TPM or was not generated there, since such a key may exist
// outside it.
func (d *Device) PersistentSigner(ctx context.Context, h tpm2.TPMHandle) (*Signer, error) {
	if h < firstOwnerPersistent || h > lastOwnerPersistent {
		return nil, fmt.Errorf("tpm: 0x%08x is not an owner persistent handle (0x81000000-0x817FFFFF)", uint32(h))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rp, err := (tpm2.ReadPublic{ObjectHandle: h}).Execute(d.tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("tpm: no key persisted at 0x%08x: %w", uint32(h), err)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: read the signing key at 0x%08x: %w", uint32(h), err)
	}
	pub, err := rp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: signing key at 0x%08x: %w", uint32(h), err)
	}
	a := pub.ObjectAttributes
	if !a.FixedTPM || !a.SensitiveDataOrigin || a.Restricted || a.Decrypt {
		return nil, fmt.Errorf("tpm: the key at 0x%08x is not an unrestricted signing key generated in and fixed to this TPM", uint32(h))
	}
	s, err := d.signer(rp.OutPublic.Bytes(), nil)
	if err != nil {
		return nil, fmt.Errorf("tpm: key at 0x%08x: %w", uint32(h), err)
	}
	if s.pub.Curve.Params().Name != "P-256" {
		return nil, fmt.Errorf("tpm: the key at 0x%08x is on %s, not P-256", uint32(h), s.pub.Curve.Params().Name)
	}
	s.persistent, s.handle, s.name = true, h, rp.Name
	return s, nil
}

// Handle returns the persistent handle of the key and true, or false for
// a key loaded from blobs for each signature.
func (s *Signer) Handle() (tpm2.TPMHandle, bool) { return s.handle, s.persistent }
