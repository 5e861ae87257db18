package tpmattest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/google/go-tpm/tpm2"
)

// Sizes of the secrets in a challenge.
const (
	// WrapKeySize is the inner wrap key W, delivered by credential
	// activation: 16 bytes, because the C SDK imports with AES-128.
	WrapKeySize = 16
	// HMACKeySize is the HMAC key K the device signs its SAS with.
	HMACKeySize = 32
)

// Challenge is the answer to a first TPM register request.
type Challenge struct {
	// AuthenticationKey is the base64 blob for the 401 body.
	AuthenticationKey string
	// Key is the HMAC key K inside the blob; keep it (see Pending) to verify
	// the device's SAS. It is secret.
	Key []byte
	// EKDigest and SRKDigest are the Key.Digest of the keys the blob was
	// made for.
	EKDigest, SRKDigest [sha256.Size]byte
}

// String describes the challenge without its key.
func (c *Challenge) String() string { return "tpmattest.Challenge{Key:REDACTED}" }

// GoString keeps %#v from printing the key.
func (c *Challenge) GoString() string { return c.String() }

// LogValue keeps slog from printing the key.
func (c *Challenge) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("authenticationKeyLen", len(c.AuthenticationKey)))
}

// NewChallenge checks the EK and SRK (marshalled TPM2B_PUBLIC, as decoded
// from the register request) and builds a challenge for them. rand nil
// means crypto/rand.
func NewChallenge(rand io.Reader, ekPub, srkPub []byte) (*Challenge, error) {
	ek, err := ParseEK(ekPub)
	if err != nil {
		return nil, err
	}
	srk, err := ParseSRK(srkPub)
	if err != nil {
		return nil, err
	}
	return NewKeyChallenge(rand, ek, srk)
}

// NewKeyChallenge builds a challenge for keys already parsed with ParseEK
// and ParseSRK: a fresh HMAC key K, wrapped so that only the TPM that holds
// both the EK and the SRK can import it (notes/tpm-blob.md §1). The caller
// must have checked the EK against the enrollment. rand nil means
// crypto/rand.
func NewKeyChallenge(random io.Reader, ek, srk *Key) (*Challenge, error) {
	if ek == nil || srk == nil || ek.Role != RoleEK || srk.Role != RoleSRK {
		return nil, errors.New("tpmattest: NewKeyChallenge needs an EK from ParseEK and an SRK from ParseSRK")
	}
	if random == nil {
		random = rand.Reader
	}
	secrets := make([]byte, WrapKeySize+HMACKeySize)
	if _, err := io.ReadFull(random, secrets); err != nil {
		return nil, fmt.Errorf("tpmattest: challenge secrets: %w", err)
	}
	w, k := secrets[:WrapKeySize:WrapKeySize], secrets[WrapKeySize:]

	idObject, encSecret, err := credential(random, ek, srk.Name, w)
	if err != nil {
		return nil, err
	}
	id, err := newIDKey(random, k)
	if err != nil {
		return nil, err
	}
	encSens, err := innerWrap(w, id.sensitive, id.name)
	if err != nil {
		return nil, err
	}
	duplicate, inSymSeed, err := outerWrap(random, srk, id.name, encSens)
	if err != nil {
		return nil, err
	}
	blob := Blob{
		IDObject:   idObject,
		EncSecret:  encSecret,
		Duplicate:  duplicate,
		InSymSeed:  inSymSeed,
		Public:     id.public,
		EncURIData: nil, // sent empty: only the TSS.MSR sample and Java read it
	}
	return &Challenge{
		AuthenticationKey: blob.Encode(),
		Key:               k,
		EKDigest:          ek.Digest,
		SRKDigest:         srk.Digest,
	}, nil
}

// credential is software TPM2_MakeCredential: W for the EK, bound to the
// SRK's Name, so that ActivateCredential(SRK, EK) releases W only in the
// TPM that holds both (parts 1 and 2).
func credential(random io.Reader, ek *Key, srkName, w []byte) (idObject, encSecret []byte, err error) {
	idObject, encSecret, err = tpm2.CreateCredential(random, ek.enc, srkName, w)
	if err != nil {
		return nil, nil, fmt.Errorf("tpmattest: make credential: %w", err)
	}
	return idObject, encSecret, nil
}

// idKey is the HMAC key as a TPM object: its public area, its marshalled
// TPM2B_SENSITIVE, and its Name.
type idKey struct {
	public    []byte // TPMT_PUBLIC, 48 bytes
	sensitive []byte // TPM2B_SENSITIVE, 74 bytes for a 32-byte key
	name      []byte // 0x000B ‖ SHA-256(public)
}

// idKeyAttributes are sign|noDA|userWithAuth (TPMA_OBJECT 0x00040440): a
// duplicated object may be neither fixedTPM nor fixedParent, and the SDKs
// sign with an empty password, so userWithAuth and an empty authValue.
const idKeyAttributes = 0x00040440

// newIDKey builds the HMAC key object by hand, byte for byte as in
// tpm-blob.md §1 steps 3-4; TestIDKeyLayout checks it against go-tpm's
// marshalling.
func newIDKey(random io.Reader, k []byte) (*idKey, error) {
	seedValue := make([]byte, sha256.Size) // must be the nameAlg's digest size
	if _, err := io.ReadFull(random, seedValue); err != nil {
		return nil, fmt.Errorf("tpmattest: ID key seed: %w", err)
	}
	h := sha256.New()
	h.Write(seedValue)
	h.Write(k)
	unique := h.Sum(nil) // the TPM checks unique = H(seedValue ‖ K) on import

	pub := make([]byte, 0, 48)
	pub = be16(pub, uint16(tpm2.TPMAlgKeyedHash))
	pub = be16(pub, uint16(tpm2.TPMAlgSHA256)) // nameAlg
	pub = be16(pub, idKeyAttributes>>16)
	pub = be16(pub, idKeyAttributes&0xffff)
	pub = appendTPM2B(pub, nil)                // authPolicy
	pub = be16(pub, uint16(tpm2.TPMAlgHMAC))   // scheme
	pub = be16(pub, uint16(tpm2.TPMAlgSHA256)) // scheme hash
	pub = appendTPM2B(pub, unique)

	sens := make([]byte, 0, 2+2+2+2+len(seedValue)+2+len(k))
	sens = be16(sens, 0) // size, filled in below
	sens = be16(sens, uint16(tpm2.TPMAlgKeyedHash))
	sens = appendTPM2B(sens, nil) // authValue: empty
	sens = appendTPM2B(sens, seedValue)
	sens = appendTPM2B(sens, k)
	sens[0], sens[1] = byte((len(sens)-2)>>8), byte(len(sens)-2)

	nameDigest := sha256.Sum256(pub)
	return &idKey{
		public:    pub,
		sensitive: sens,
		name:      append(be16(make([]byte, 0, 34), uint16(tpm2.TPMAlgSHA256)), nameDigest[:]...),
	}, nil
}

// innerWrap protects the sensitive area with W, which only credential
// activation releases: CFB(W, TPM2B(H(TPM2B_SENSITIVE ‖ Name)) ‖
// TPM2B_SENSITIVE). The hash is the ID key's nameAlg (SHA-256).
func innerWrap(w, sensitive, name []byte) ([]byte, error) {
	h := sha256.New()
	h.Write(sensitive)
	h.Write(name)
	plain := make([]byte, 0, 2+sha256.Size+len(sensitive))
	plain = appendTPM2B(plain, h.Sum(nil))
	plain = append(plain, sensitive...)
	return cfb(w, plain)
}

// outerWrap protects the inner blob for the SRK: a seed encapsulated to
// the SRK (label DUPLICATE), symKey = KDFa(STORAGE, Name(ID)), and
// outerHMAC over (dupSensitive ‖ Name(ID)), all with the SRK's nameAlg and
// symmetric key size. It returns TPM2B_PRIVATE's and inSymSeed's contents.
// go-tpm's CreateDuplicate cannot be used: it adds a size prefix that is
// wrong when there is an inner wrapper.
func outerWrap(random io.Reader, srk *Key, name, encSens []byte) (duplicate, inSymSeed []byte, err error) {
	hash, err := srk.Public.NameAlg.Hash()
	if err != nil {
		return nil, nil, fmt.Errorf("tpmattest: SRK nameAlg: %w", err)
	}
	symBits, err := srk.enc.SymmetricParameters().KeyBits.AES()
	if err != nil {
		return nil, nil, fmt.Errorf("tpmattest: SRK symmetric key size: %w", err)
	}
	seed, inSymSeed, err := srk.enc.Encapsulate(random, "DUPLICATE")
	if err != nil {
		return nil, nil, fmt.Errorf("tpmattest: seed for the SRK: %w", err)
	}
	dupSensitive, err := cfb(tpm2.KDFa(hash, seed, "STORAGE", name, nil, int(*symBits)), encSens)
	if err != nil {
		return nil, nil, err
	}
	mac := hmac.New(hash.New, tpm2.KDFa(hash, seed, "INTEGRITY", nil, nil, hash.Size()*8))
	mac.Write(dupSensitive)
	mac.Write(name)
	duplicate = make([]byte, 0, 2+hash.Size()+len(dupSensitive))
	duplicate = appendTPM2B(duplicate, mac.Sum(nil))
	duplicate = append(duplicate, dupSensitive...)
	return duplicate, inSymSeed, nil
}

// cfb is the TPM's symmetric protection: AES full-block CFB, zero IV, no
// padding.
func cfb(key, plain []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("tpmattest: AES key: %w", err)
	}
	out := make([]byte, len(plain))
	//lint:ignore SA1019 TPM 2.0 mandates unauthenticated CFB here; integrity comes from the HMACs.
	cipher.NewCFBEncrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(out, plain)
	return out, nil
}

func be16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }
