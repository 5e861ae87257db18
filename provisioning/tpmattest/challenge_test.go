package tpmattest

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestBlobSizes(t *testing.T) {
	// Sizes from notes/tpm-blob.md §1, seen on swtpm.
	for _, tt := range []struct {
		name    string
		ek, srk []byte
		want    int
	}{
		{"rsa ek, rsa srk", rsaEK(t), rsaSRK(t), 766},
		{"rsa ek, ecc srk", rsaEK(t), eccSRK(t), 578},
		{"ecc ek, ecc srk", eccEK(t), eccSRK(t), 2 + 52 + 2 + 68 + 144 + 70 + 50 + 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := NewChallenge(nil, tt.ek, tt.srk)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := base64.StdEncoding.DecodeString(ch.AuthenticationKey)
			if len(raw) != tt.want {
				t.Errorf("blob is %d bytes, want %d", len(raw), tt.want)
			}
			b, err := ParseBlob(ch.AuthenticationKey)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.IDObject) != 52 || len(b.Duplicate) != 142 || len(b.Public) != 48 || len(b.EncURIData) != 0 {
				t.Errorf("parts %d/%d/%d/%d, want 52/142/48/0", len(b.IDObject), len(b.Duplicate), len(b.Public), len(b.EncURIData))
			}
			if b.Encode() != ch.AuthenticationKey {
				t.Error("ParseBlob then Encode does not give the blob back")
			}
			if len(ch.Key) != HMACKeySize || ch.EKDigest != sha256.Sum256(tt.ek) || ch.SRKDigest != sha256.Sum256(tt.srk) {
				t.Error("challenge key or digests are wrong")
			}
		})
	}
}

// TestBlobUnwrapsInSoftware plays the TPM's part for software RSA keys:
// ActivateCredential with the EK, then Import under the SRK with the
// inner key, checking every HMAC on the way (TPM 2.0 Part 1 §24, §23.3).
// The TPM-level proof is in clients/tpm's tests; this one pins the
// construction without cgo.
func TestBlobUnwrapsInSoftware(t *testing.T) {
	ekPriv, srkPriv := testRSA(t, 0), testRSA(t, 1)
	ek, srk := rsaEK(t), rsaSRK(t)
	ch, err := NewChallenge(rand.Reader, ek, srk)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBlob(ch.AuthenticationKey)
	if err != nil {
		t.Fatal(err)
	}
	srkKey, _ := ParseSRK(srk)

	// ActivateCredential(SRK, EK).
	seed := oaepDecrypt(t, ekPriv, b.EncSecret, "IDENTITY")
	integrity, encIdentity := split2B(t, b.IDObject)
	checkHMAC(t, "credential", seed, integrity, encIdentity, srkKey.Name)
	w := trim2B(t, cfbDecrypt(t, tpm2.KDFa(crypto.SHA256, seed, "STORAGE", srkKey.Name, nil, 128), encIdentity))
	if len(w) != WrapKeySize {
		t.Fatalf("W is %d bytes", len(w))
	}

	// Import(SRK, W).
	nameDigest := sha256.Sum256(b.Public)
	idName := append([]byte{0, 0x0b}, nameDigest[:]...)
	seed2 := oaepDecrypt(t, srkPriv, b.InSymSeed, "DUPLICATE")
	outerHMAC, dupSensitive := split2B(t, b.Duplicate)
	checkHMAC(t, "outer wrapper", seed2, outerHMAC, dupSensitive, idName)
	encSens := cfbDecrypt(t, tpm2.KDFa(crypto.SHA256, seed2, "STORAGE", idName, nil, 128), dupSensitive)
	inner := cfbDecrypt(t, w, encSens)
	innerIntegrity, sens2B := split2B(t, inner)
	if want := sha256.Sum256(append(bytes.Clone(sens2B), idName...)); !bytes.Equal(innerIntegrity, want[:]) {
		t.Fatal("inner integrity does not verify")
	}
	sens, err := tpm2.Unmarshal[tpm2.TPMTSensitive](trim2B(t, sens2B))
	if err != nil {
		t.Fatal(err)
	}
	bits, err := sens.Sensitive.Bits()
	if err != nil || !bytes.Equal(bits.Buffer, ch.Key) {
		t.Fatalf("sensitive area does not carry K (%v)", err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b.Public)
	if err != nil {
		t.Fatal(err)
	}
	unique, _ := pub.Unique.KeyedHash()
	if want := sha256.Sum256(append(bytes.Clone(sens.SeedValue.Buffer), ch.Key...)); !bytes.Equal(unique.Buffer, want[:]) {
		t.Error("unique is not H(seedValue ‖ K)")
	}
	if len(sens.AuthValue.Buffer) != 0 {
		t.Error("authValue is not empty")
	}
}

func oaepDecrypt(t *testing.T, k *rsa.PrivateKey, ct []byte, label string) []byte {
	t.Helper()
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, k, ct, []byte(label+"\x00"))
	if err != nil {
		t.Fatalf("OAEP %s: %v", label, err)
	}
	return pt
}

func split2B(t *testing.T, b []byte) (first, rest []byte) {
	t.Helper()
	if len(b) < 2 || len(b)-2 < int(b[0])<<8|int(b[1]) {
		t.Fatalf("not a TPM2B: %d bytes", len(b))
	}
	n := int(b[0])<<8 | int(b[1])
	return b[2 : 2+n], b[2+n:]
}

func trim2B(t *testing.T, b []byte) []byte {
	t.Helper()
	v, rest := split2B(t, b)
	if len(rest) != 0 {
		t.Fatalf("%d bytes after a TPM2B", len(rest))
	}
	return v
}

func checkHMAC(t *testing.T, what string, seed, want []byte, data ...[]byte) {
	t.Helper()
	m := hmac.New(sha256.New, tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, 256))
	for _, d := range data {
		m.Write(d)
	}
	if !hmac.Equal(m.Sum(nil), want) {
		t.Fatalf("%s HMAC does not verify", what)
	}
}

func cfbDecrypt(t *testing.T, key, ct []byte) []byte {
	t.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(ct))
	//lint:ignore SA1019 TPM 2.0 CFB, as in cfb.
	cipher.NewCFBDecrypter(blk, make([]byte, aes.BlockSize)).XORKeyStream(out, ct)
	return out
}

// TestIDKeyLayout checks the hand-built public and sensitive areas against
// go-tpm's marshalling of the same structures.
func TestIDKeyLayout(t *testing.T) {
	k := bytes.Repeat([]byte{7}, HMACKeySize)
	seed := bytes.Repeat([]byte{9}, sha256.Size)
	id, err := newIDKey(bytes.NewReader(seed), k)
	if err != nil {
		t.Fatal(err)
	}
	unique := sha256.Sum256(append(bytes.Clone(seed), k...))
	pub := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			SignEncrypt:  true,
			NoDA:         true,
			UserWithAuth: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
	}
	if want := tpm2.Marshal(pub); !bytes.Equal(id.public, want) {
		t.Errorf("public\n got %x\nwant %x", id.public, want)
	}
	sens := tpm2.Marshal(tpm2.New2B(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: k}),
	}))
	if !bytes.Equal(id.sensitive, sens) || len(sens) != 74 {
		t.Errorf("sensitive\n got %x\nwant %x", id.sensitive, sens)
	}
	name, _ := tpm2.ObjectName(&pub)
	if !bytes.Equal(id.name, name.Buffer) {
		t.Errorf("name %x, want %x", id.name, name.Buffer)
	}
}

func TestNewChallengeErrors(t *testing.T) {
	ek, srk := rsaEK(t), rsaSRK(t)
	ekKey, _ := ParseEK(ek)
	srkKey, _ := ParseSRK(srk)
	if _, err := NewChallenge(nil, []byte{1}, srk); ErrorCode(err) != CodeMalformedKey {
		t.Errorf("bad EK: %v", err)
	}
	if _, err := NewChallenge(nil, ek, []byte{1}); ErrorCode(err) != CodeMalformedKey {
		t.Errorf("bad SRK: %v", err)
	}
	if _, err := NewKeyChallenge(nil, srkKey, ekKey); err == nil {
		t.Error("roles swapped: no error")
	}
	if _, err := NewKeyChallenge(nil, nil, srkKey); err == nil {
		t.Error("nil EK: no error")
	}
	if _, err := NewKeyChallenge(errReader{}, ekKey, srkKey); !errors.Is(err, errTestRand) {
		t.Errorf("failing rand: %v", err)
	}
}

func TestChallengeDoesNotPrintKey(t *testing.T) {
	ch, err := NewChallenge(nil, rsaEK(t), rsaSRK(t))
	if err != nil {
		t.Fatal(err)
	}
	p := ch.Pending("dev", testNow, 0)
	hexKey := fmt.Sprintf("%x", ch.Key)
	for _, s := range []string{fmt.Sprint(ch), fmt.Sprintf("%#v", ch), fmt.Sprint(p), fmt.Sprintf("%#v", p),
		fmt.Sprintf("%+v", ch.LogValue()), fmt.Sprintf("%+v", p.LogValue())} {
		if strings.Contains(s, hexKey) || strings.Contains(s, fmt.Sprint(ch.Key)) {
			t.Errorf("key printed: %s", s)
		}
	}
}

func TestParseBlobRefuses(t *testing.T) {
	ch, err := NewChallenge(nil, rsaEK(t), eccSRK(t))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(ch.AuthenticationKey)
	enc := base64.StdEncoding.EncodeToString
	for _, tt := range []struct {
		name, blob, msg string
	}{
		{"not base64", "%%%", "not base64"},
		{"empty", "", "ends before part 1"},
		{"truncated", enc(raw[:len(raw)-3]), "part 5 is truncated"},
		{"no part 6", enc(raw[:len(raw)-2]), "ends before part 6"},
		{"trailing", enc(append(bytes.Clone(raw), 0, 0, 0)), "after part 6"},
		{"too long", strings.Repeat("A", 8000), "longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBlob(tt.blob)
			if ErrorCode(err) != CodeMalformedChallenge || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %v, want %q", err, tt.msg)
			}
		})
	}
}

func FuzzParseBlob(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 1})
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := base64.StdEncoding.EncodeToString(raw)
		b, err := ParseBlob(s)
		if err == nil && b.Encode() != s {
			t.Fatal("accepted blob does not encode back")
		}
	})
}
