package tpm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
)

// Persistent handles used by the Azure SDKs and the TCG provisioning
// guidance.
const (
	EKHandle    tpm2.TPMHandle = 0x81010001
	SRKHandle   tpm2.TPMHandle = 0x81000001
	IDKeyHandle tpm2.TPMHandle = 0x81000100 // the imported HMAC key
)

// KeyType selects the algorithm of an EK or SRK the Device creates.
type KeyType int

// Key types; RSA is what the Azure SDKs create.
const (
	RSA KeyType = iota
	ECC
)

func (k KeyType) String() string {
	if k == ECC {
		return "ECC"
	}
	return "RSA"
}

// Options configures New.
type Options struct {
	// EKType and SRKType select the templates (TCG RSA-2048 or ECC P-256)
	// used when no key is persisted at EKHandle or SRKHandle. A persisted
	// key is always used as it is, as the SDKs do.
	EKType, SRKType KeyType
	// Persist makes created EK and SRK persistent at EKHandle and
	// SRKHandle, and the imported key at IDKeyHandle (replacing the one
	// there), so that they survive a restart. It needs the owner hierarchy
	// with an empty password. Without it, nothing on the TPM changes
	// beyond the Device's lifetime.
	Persist bool
	// Logger receives debug lines about TPM steps (never key material);
	// nil means slog.Default().
	Logger *slog.Logger
}

// object is a key the Device has a handle for.
type object struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public []byte // TPM2B_PUBLIC
	// transient: created by this Device, to be flushed.
	transient bool
}

// Device is one TPM used for DPS provisioning. It is safe for concurrent
// use; commands are serialised.
type Device struct {
	mu   sync.Mutex
	tpm  transport.TPM
	opts Options
	log  *slog.Logger

	ek, srk  object
	ekLoaded bool
	// ekPublic and srkPublic are set once by New: the EK may be flushed
	// and re-created, but its public area does not change.
	ekPublic, srkPublic []byte
	id                  *hmacKey // nil until ActivateAndImport
}

// hmacKey is the imported HMAC key: either persistent at handle, or a
// private/public pair loaded under the SRK for each use.
type hmacKey struct {
	persistent      bool
	handle          tpm2.TPMHandle
	name            tpm2.TPM2BName
	public, private []byte // TPMT_PUBLIC contents and TPM2B_PRIVATE contents
	hash            tpm2.TPMIAlgHash
}

// New prepares t for provisioning: it loads the EK and SRK from their
// persistent handles or creates them from the standard templates (RSA EK
// creation takes tens of milliseconds on a simulator and can take seconds
// on a real TPM). With Options.Persist, a key already persisted at
// IDKeyHandle becomes the signing key, so a device can sign again after a
// restart. The caller keeps ownership of t; Close releases what New
// loaded.
func New(ctx context.Context, t transport.TPM, opts Options) (*Device, error) {
	if t == nil {
		return nil, errors.New("tpm: nil transport")
	}
	d := &Device{tpm: t, opts: opts, log: opts.Logger}
	if d.log == nil {
		d.log = slog.Default()
	}
	var err error
	if d.ek, err = d.primary(ctx, EKHandle, tpm2.TPMRHEndorsement, ekTemplate(opts.EKType)); err != nil {
		return nil, fmt.Errorf("tpm: endorsement key: %w", err)
	}
	d.ekLoaded = true
	if d.srk, err = d.primary(ctx, SRKHandle, tpm2.TPMRHOwner, srkTemplate(opts.SRKType)); err != nil {
		d.flush(&d.ek)
		return nil, fmt.Errorf("tpm: storage root key: %w", err)
	}
	d.ekPublic, d.srkPublic = d.ek.public, d.srk.public
	if opts.Persist {
		if id, err := d.readPersistentIDKey(); err == nil {
			d.id = id
		}
	}
	return d, nil
}

func ekTemplate(k KeyType) tpm2.TPMTPublic {
	if k == ECC {
		return tpm2.ECCEKTemplate
	}
	return tpm2.RSAEKTemplate
}

func srkTemplate(k KeyType) tpm2.TPMTPublic {
	if k == ECC {
		return tpm2.ECCSRKTemplate
	}
	return tpm2.RSASRKTemplate
}

// primary returns the key persisted at persistent, or creates it in
// hierarchy from template (and persists it with Options.Persist).
func (d *Device) primary(ctx context.Context, persistent, hierarchy tpm2.TPMHandle, template tpm2.TPMTPublic) (object, error) {
	if err := ctx.Err(); err != nil {
		return object{}, err
	}
	if rp, err := (tpm2.ReadPublic{ObjectHandle: persistent}).Execute(d.tpm); err == nil {
		d.log.Debug("tpm: using persisted key", "handle", fmt.Sprintf("0x%08x", uint32(persistent)))
		return object{handle: persistent, name: rp.Name, public: tpm2b(rp.OutPublic.Bytes())}, nil
	} else if !errors.Is(err, tpm2.TPMRCHandle) {
		return object{}, fmt.Errorf("read public 0x%08x: %w", uint32(persistent), err)
	}
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(template),
	}.Execute(d.tpm)
	if err != nil {
		return object{}, fmt.Errorf("create primary: %w", err)
	}
	o := object{handle: cp.ObjectHandle, name: cp.Name, public: tpm2b(cp.OutPublic.Bytes()), transient: true}
	if !d.opts.Persist {
		return o, nil
	}
	if err := d.persist(&o, persistent); err != nil {
		d.flush(&o)
		return object{}, err
	}
	return o, nil
}

// persist makes the transient o persistent at h and flushes the transient
// copy.
func (d *Device) persist(o *object, h tpm2.TPMHandle) error {
	_, err := tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: o.handle, Name: o.name},
		PersistentHandle: h,
	}.Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("persist at 0x%08x: %w", uint32(h), err)
	}
	d.flush(o)
	o.handle, o.transient = h, false
	return nil
}

// evict removes the persistent object at h, if any.
func (d *Device) evict(h tpm2.TPMHandle) error {
	rp, err := (tpm2.ReadPublic{ObjectHandle: h}).Execute(d.tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read public 0x%08x: %w", uint32(h), err)
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: h, Name: rp.Name},
		PersistentHandle: h,
	}.Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("evict 0x%08x: %w", uint32(h), err)
	}
	return nil
}

// flush releases a transient object; persistent ones stay.
func (d *Device) flush(o *object) {
	if !o.transient || o.handle == 0 {
		return
	}
	if _, err := (tpm2.FlushContext{FlushHandle: o.handle}).Execute(d.tpm); err != nil {
		d.log.Debug("tpm: flush failed", "handle", fmt.Sprintf("0x%08x", uint32(o.handle)), "err", err)
	}
	o.handle = 0
}

// tpm2b prefixes a TPMT_PUBLIC with its size.
func tpm2b(contents []byte) []byte {
	out := make([]byte, 0, 2+len(contents))
	out = append(out, byte(len(contents)>>8), byte(len(contents)))
	return append(out, contents...)
}

// EndorsementKey returns the EK's marshalled TPM2B_PUBLIC, as sent in
// tpm.endorsementKey (base64).
func (d *Device) EndorsementKey() []byte { return append([]byte(nil), d.ekPublic...) }

// StorageRootKey returns the SRK's marshalled TPM2B_PUBLIC, as sent in
// tpm.storageRootKey (base64).
func (d *Device) StorageRootKey() []byte { return append([]byte(nil), d.srkPublic...) }

// RegistrationID is the default registration ID of this TPM: base32 of
// SHA-256 over the EK's TPM2B_PUBLIC, as the SDKs compute it.
func (d *Device) RegistrationID() string { return tpmattest.RegistrationIDFromEK(d.ekPublic) }

// Close flushes the transient objects this Device loaded. It does not
// close the transport.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ekLoaded {
		d.flush(&d.ek)
		d.ekLoaded = false
	}
	d.flush(&d.srk)
	return nil
}
