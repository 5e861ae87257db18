package tpmattest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestParseAcceptsTemplates(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    []byte
		role Role
	}{
		{"rsa ek", rsaEK(t), RoleEK},
		{"ecc ek", eccEK(t), RoleEK},
		{"rsa srk", rsaSRK(t), RoleSRK},
		{"ecc srk", eccSRK(t), RoleSRK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := parse(tt.b, tt.role)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !bytes.Equal(tpm2.Marshal(k.Public), tt.b[2:]) {
				t.Error("decoded public does not re-marshal to the input")
			}
			if !bytes.Equal(k.TPM2B, tt.b) || k.Digest != sha256.Sum256(tt.b) {
				t.Error("TPM2B or Digest is not the input's")
			}
			name, err := tpm2.ObjectName(k.Public)
			if err != nil || !bytes.Equal(name.Buffer, k.Name) {
				t.Errorf("Name = %x, go-tpm says %x (%v)", k.Name, name.Buffer, err)
			}
			viaB64, err := parseBase64(base64.StdEncoding.EncodeToString(tt.b), tt.role)
			if err != nil || viaB64.Digest != k.Digest {
				t.Errorf("base64 form: %v", err)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	rsaEKPub := func(f func(p *tpm2.TPMTPublic)) []byte {
		p := rsaPublic(tpm2.RSAEKTemplate, testRSA(t, 0))
		f(&p)
		return marshal2B(p)
	}
	rsaSRKPub := func(f func(p *tpm2.TPMTPublic)) []byte {
		p := rsaPublic(tpm2.RSASRKTemplate, testRSA(t, 1))
		f(&p)
		return marshal2B(p)
	}
	rsaParms := func(p *tpm2.TPMTPublic) *tpm2.TPMSRSAParms {
		r, err := p.Parameters.RSADetail()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	eccEKPub := func(f func(p *tpm2.TPMTPublic)) []byte {
		p := eccPublic(tpm2.ECCEKTemplate, newECDH(t))
		f(&p)
		return marshal2B(p)
	}
	good := rsaEK(t)
	aes256 := tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(256)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	for _, tt := range []struct {
		name string
		b    []byte
		role Role
		code int
		msg  string
	}{
		{"empty", nil, RoleEK, CodeMalformedKey, "too short"},
		{"too long", make([]byte, MaxPublicLen+1), RoleEK, CodeMalformedKey, "longer than"},
		{"size mismatch", append(bytes.Clone(good), 0), RoleEK, CodeMalformedKey, "bytes follow"},
		{"bare TPMT_PUBLIC", good[2:], RoleEK, CodeMalformedKey, "not a TPM2B_PUBLIC"},
		{"garbage", []byte{0, 4, 1, 2, 3, 4}, RoleEK, CodeMalformedKey, "truncated"},
		{"reserved attribute", func() []byte { b := bytes.Clone(good); b[9] |= 0x01; return b }(), RoleEK, CodeMalformedKey, "reserved"},
		{"trailing bytes inside", func() []byte {
			b := append(bytes.Clone(good), 0, 0)
			b[0], b[1] = byte((len(b)-2)>>8), byte(len(b)-2)
			return b
		}(), RoleEK, CodeMalformedKey, "trailing bytes"},
		{"sha1 nameAlg", rsaEKPub(func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }), RoleEK, CodeUnsupportedKey, "nameAlg"},
		{"not fixedTPM", rsaEKPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }), RoleEK, CodeUnsupportedKey, "fixedTPM"},
		{"not sensitiveDataOrigin", rsaEKPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false }), RoleEK, CodeUnsupportedKey, "sensitiveDataOrigin"},
		{"not restricted", rsaEKPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false }), RoleEK, CodeUnsupportedKey, "restricted"},
		{"signing key", rsaEKPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = true }), RoleEK, CodeUnsupportedKey, "signing"},
		{"rsa 1024 bits declared", rsaEKPub(func(p *tpm2.TPMTPublic) { rsaParms(p).KeyBits = 1024 }), RoleEK, CodeUnsupportedKey, "2048, 3072 or 4096"},
		{"rsa modulus too short", rsaEKPub(func(p *tpm2.TPMTPublic) {
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: testRSA(t, 0).N.Bytes()[:128]})
		}), RoleEK, CodeUnsupportedKey, "modulus"},
		{"rsa exponent 3", rsaEKPub(func(p *tpm2.TPMTPublic) { rsaParms(p).Exponent = 3 }), RoleEK, CodeUnsupportedKey, "exponent"},
		{"rsa oaep scheme", rsaEKPub(func(p *tpm2.TPMTPublic) {
			rsaParms(p).Scheme = tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgOAEP,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgOAEP, &tpm2.TPMSEncSchemeOAEP{HashAlg: tpm2.TPMAlgSHA256})}
		}), RoleEK, CodeUnsupportedKey, "scheme"},
		{"srk aes-256", rsaSRKPub(func(p *tpm2.TPMTPublic) { rsaParms(p).Symmetric = aes256 }), RoleSRK, CodeUnsupportedKey, "AES-128-CFB"},
		{"srk without symmetric", rsaSRKPub(func(p *tpm2.TPMTPublic) {
			rsaParms(p).Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
		}), RoleSRK, CodeUnsupportedKey, "AES-CFB"},
		{"ecc p-521", eccEKPub(func(p *tpm2.TPMTPublic) {
			e, _ := p.Parameters.ECCDetail()
			e.CurveID = tpm2.TPMECCNistP521
		}), RoleEK, CodeUnsupportedKey, "P-256 or P-384"},
		{"ecc point off the curve", eccEKPub(func(p *tpm2.TPMTPublic) {
			pt, _ := p.Unique.ECC()
			pt.Y.Buffer[31] ^= 1
		}), RoleEK, CodeUnsupportedKey, "not on the curve"},
		{"keyedhash", marshal2B(tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.RSAEKTemplate.ObjectAttributes,
			Parameters:       tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{}),
			Unique:           tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, 32)}),
		}), RoleEK, CodeUnsupportedKey, "RSA or ECC"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(tt.b, tt.role)
			if ErrorCode(err) != tt.code || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want code %d containing %q", err, tt.code, tt.msg)
			}
			if !strings.Contains(err.Error(), tt.role.String()) {
				t.Errorf("err %q does not name the field %s", err, tt.role)
			}
		})
	}
}

func TestParseBase64Refuses(t *testing.T) {
	for _, s := range []string{"", "!!!", strings.Repeat("A", 2000)} {
		if _, err := ParseEKBase64(s); ErrorCode(err) != CodeMalformedKey {
			t.Errorf("ParseEKBase64(%.10q) = %v, want code %d", s, err, CodeMalformedKey)
		}
	}
}

func TestRegistrationIDFromEK(t *testing.T) {
	ek := rsaEK(t)
	sum := sha256.Sum256(ek)
	// The Node SDK: base32 (RFC 4648), lower-cased, "=" removed.
	want := strings.TrimRight(strings.ToLower(base32.StdEncoding.EncodeToString(sum[:])), "=")
	if got := RegistrationIDFromEK(ek); got != want {
		t.Errorf("RegistrationIDFromEK = %q, want %q", got, want)
	}
	k, err := ParseEK(ek)
	if err != nil {
		t.Fatal(err)
	}
	if k.RegistrationID() != want || len(want) != 52 {
		t.Errorf("Key.RegistrationID = %q, want %q (52 chars)", k.RegistrationID(), want)
	}
}

func TestEKMatches(t *testing.T) {
	ek := rsaEK(t)
	other := eccEK(t)
	b64 := base64.StdEncoding.EncodeToString
	for _, tt := range []struct {
		name                string
		enrolled, presented string
		want                bool
	}{
		{"same TPM2B", b64(ek), b64(ek), true},
		{"enrolled as TPMT_PUBLIC", b64(ek[2:]), b64(ek), true},
		{"enrolled without padding", base64.RawStdEncoding.EncodeToString(ek), b64(ek), true},
		{"other key", b64(other), b64(ek), false},
		{"empty enrolled", "", b64(ek), false},
		{"garbage enrolled", "***", b64(ek), false},
		{"prefix only", b64(ek[:40]), b64(ek), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := EKMatches(tt.enrolled, tt.presented); got != tt.want {
				t.Errorf("EKMatches = %v, want %v", got, tt.want)
			}
			k, err := ParseEKBase64(tt.presented)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Matches(tt.enrolled); got != tt.want {
				t.Errorf("Key.Matches = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(rsaEK(f))
	f.Add(eccSRK(f))
	f.Add([]byte{0, 2, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, role := range []Role{RoleEK, RoleSRK} {
			k, err := parse(b, role)
			if err != nil {
				continue
			}
			// The hand-written decoder must agree with go-tpm's encoding,
			// which the Name and ImportEncapsulationKey rely on.
			if !bytes.Equal(k.TPM2B, b) || !bytes.Equal(tpm2.Marshal(k.Public), b[2:]) {
				t.Fatal("accepted key does not re-marshal to its bytes")
			}
		}
	})
}
