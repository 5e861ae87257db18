package tpm

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
)

// ErrNoKey is returned by SignSAS and HMAC before a key was imported.
var ErrNoKey = errors.New("tpm: no imported key (call ActivateAndImport first)")

// ActivateAndImport imports the HMAC key of a DPS authenticationKey blob
// (the 401 challenge, or registrationState.tpm.authenticationKey): it
// activates the credential with the EK and SRK to get the inner wrap key,
// imports the duplicate under the SRK with it, and keeps the result as the
// key SignSAS uses (persisted at IDKeyHandle with Options.Persist). The
// TPM refuses a blob made for another EK or SRK, or a tampered one; the
// error then wraps the tpm2.TPMRC.
func (d *Device) ActivateAndImport(ctx context.Context, authenticationKey string) error {
	blob, err := tpmattest.ParseBlob(authenticationKey)
	if err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](blob.Public)
	if err != nil {
		return fmt.Errorf("tpm: authenticationKey: public area does not parse: %w", err)
	}
	hash, err := hmacHash(pub)
	if err != nil {
		return err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	w, err := d.activate(ctx, blob)
	if err != nil {
		return err
	}
	defer clear(w)
	if err := ctx.Err(); err != nil {
		return err
	}
	imp, err := tpm2.Import{
		ParentHandle:  d.srkAuth(),
		EncryptionKey: tpm2.TPM2BData{Buffer: w},
		ObjectPublic:  tpm2.BytesAs2B[tpm2.TPMTPublic](blob.Public),
		Duplicate:     tpm2.TPM2BPrivate{Buffer: blob.Duplicate},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: blob.InSymSeed},
		Symmetric: tpm2.TPMTSymDef{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(8*len(w))),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
	}.Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("tpm: import: %w", err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return fmt.Errorf("tpm: imported key name: %w", err)
	}
	id := &hmacKey{name: *name, public: blob.Public, private: imp.OutPrivate.Buffer, hash: hash}
	if d.opts.Persist {
		if err := d.persistIDKey(id); err != nil {
			return err
		}
	}
	d.id = id
	d.log.Debug("tpm: key imported", "persistent", id.persistent)
	return nil
}

// activate runs ActivateCredential(SRK, EK) and returns the inner wrap
// key. The EK is flushed afterwards (if it is transient): the TPM has only
// a few object slots, and Import and Load need them.
func (d *Device) activate(ctx context.Context, blob *tpmattest.Blob) ([]byte, error) {
	if err := d.loadEK(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if d.ek.transient {
			d.flush(&d.ek)
			d.ekLoaded = false
		}
	}()
	// The EK has adminWithPolicy and the policy PolicySecret(endorsement)
	// (TCG EK templates), so its use needs that policy session.
	ekPolicy := func(t transport.TPM, s tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: s,
			NonceTPM:      nonce,
		}.Execute(t)
		return err
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: d.srkAuth(),
		KeyHandle: tpm2.AuthHandle{Handle: d.ek.handle, Name: d.ek.name,
			Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy)},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: blob.IDObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: blob.EncSecret},
	}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: activate credential: %w", err)
	}
	w := rsp.CertInfo.Buffer
	// The C SDK imports with {AES, 128, CFB}; other sizes are AES-192/256.
	if len(w) != 16 && len(w) != 24 && len(w) != 32 {
		clear(w)
		return nil, fmt.Errorf("tpm: activate credential: inner wrap key of %d bytes is not an AES key", len(w))
	}
	return w, nil
}

// loadEK re-creates a transient EK flushed after an earlier activation.
func (d *Device) loadEK(ctx context.Context) error {
	if d.ekLoaded || !d.ek.transient {
		return nil
	}
	ek, err := d.primary(ctx, EKHandle, tpm2.TPMRHEndorsement, ekTemplate(d.opts.EKType))
	if err != nil {
		return fmt.Errorf("tpm: endorsement key: %w", err)
	}
	d.ek, d.ekLoaded = ek, true
	return nil
}

func (d *Device) srkAuth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: d.srk.handle, Name: d.srk.name, Auth: tpm2.PasswordAuth(nil)}
}

// loadUnderSRK loads a key the SRK wraps (TPMT_PUBLIC and TPM2B_PRIVATE
// contents) as a transient object, to be released with d.flush. The
// caller holds d.mu.
func (d *Device) loadUnderSRK(public, private []byte) (object, error) {
	l, err := tpm2.Load{
		ParentHandle: d.srkAuth(),
		InPrivate:    tpm2.TPM2BPrivate{Buffer: private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](public),
	}.Execute(d.tpm)
	if err != nil {
		return object{}, err
	}
	return object{handle: l.ObjectHandle, name: l.Name, transient: true}, nil
}

// hmacHash checks that pub is an HMAC key the SDKs can sign with and
// returns its hash, which TPM2_HMAC is then asked for, as the SDKs do.
func hmacHash(pub *tpm2.TPMTPublic) (tpm2.TPMIAlgHash, error) {
	if pub.Type != tpm2.TPMAlgKeyedHash {
		return 0, fmt.Errorf("tpm: authenticationKey: key type 0x%04x is not KEYEDHASH", uint16(pub.Type))
	}
	parms, err := pub.Parameters.KeyedHashDetail()
	if err != nil || parms.Scheme.Scheme != tpm2.TPMAlgHMAC {
		return 0, errors.New("tpm: authenticationKey: key is not an HMAC key")
	}
	h, err := parms.Scheme.Details.HMAC()
	if err != nil {
		return 0, errors.New("tpm: authenticationKey: HMAC key without a hash")
	}
	if _, err := h.HashAlg.Hash(); err != nil {
		return 0, fmt.Errorf("tpm: authenticationKey: HMAC hash: %w", err)
	}
	return h.HashAlg, nil
}

// load makes the HMAC key usable and returns its handle and a func that
// releases it.
func (d *Device) loadHMACKey() (tpm2.TPMHandle, func(), error) {
	if d.id.persistent {
		return d.id.handle, func() {}, nil
	}
	o, err := d.loadUnderSRK(d.id.public, d.id.private)
	if err != nil {
		return 0, nil, fmt.Errorf("tpm: load key: %w", err)
	}
	return o.handle, func() { d.flush(&o) }, nil
}

// persistIDKey loads id, replaces whatever is at IDKeyHandle with it (as
// the SDKs do on every import) and flushes the transient copy.
func (d *Device) persistIDKey(id *hmacKey) error {
	o, err := d.loadUnderSRK(id.public, id.private)
	if err != nil {
		return fmt.Errorf("tpm: load key: %w", err)
	}
	defer d.flush(&o)
	if err := d.evict(IDKeyHandle); err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	if err := d.persist(&o, IDKeyHandle); err != nil {
		return fmt.Errorf("tpm: imported key: %w", err)
	}
	id.persistent, id.handle = true, IDKeyHandle
	return nil
}

// readPersistentIDKey adopts an HMAC key persisted at IDKeyHandle by an
// earlier run.
func (d *Device) readPersistentIDKey() (*hmacKey, error) {
	rp, err := (tpm2.ReadPublic{ObjectHandle: IDKeyHandle}).Execute(d.tpm)
	if err != nil {
		return nil, err
	}
	pub, err := rp.OutPublic.Contents()
	if err != nil {
		return nil, err
	}
	hash, err := hmacHash(pub)
	if err != nil {
		return nil, err
	}
	return &hmacKey{persistent: true, handle: IDKeyHandle, name: rp.Name, public: rp.OutPublic.Bytes(), hash: hash}, nil
}
