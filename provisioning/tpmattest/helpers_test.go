package tpmattest

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// Software stand-ins for a TPM's EK and SRK: the public areas the TCG
// templates give, with keys whose private halves the tests hold.

var (
	rsaOnce sync.Once
	rsaKeys [2]*rsa.PrivateKey
)

// testRSA returns one of two RSA-2048 keys, generated once per run.
func testRSA(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for j := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[j] = k
		}
	})
	return rsaKeys[i]
}

// deepCopy copies a public area, unions included: go-tpm's unions hold
// pointers, so a plain copy of a template shares its parameters.
func deepCopy(p tpm2.TPMTPublic) tpm2.TPMTPublic {
	c, err := tpm2.Unmarshal[tpm2.TPMTPublic](tpm2.Marshal(p))
	if err != nil {
		panic(err)
	}
	return *c
}

func rsaPublic(template tpm2.TPMTPublic, k *rsa.PrivateKey) tpm2.TPMTPublic {
	template = deepCopy(template)
	template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, k.Size()))})
	return template
}

func eccPublic(template tpm2.TPMTPublic, k *ecdh.PrivateKey) tpm2.TPMTPublic {
	template = deepCopy(template)
	raw := k.PublicKey().Bytes()[1:]
	template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: raw[:len(raw)/2]},
		Y: tpm2.TPM2BECCParameter{Buffer: raw[len(raw)/2:]},
	})
	return template
}

func newECDH(t testing.TB) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// marshal2B is the TPM2B_PUBLIC a device sends for pub.
func marshal2B(pub tpm2.TPMTPublic) []byte {
	return tpm2.Marshal(tpm2.New2B(pub))
}

func rsaEK(t testing.TB) []byte  { return marshal2B(rsaPublic(tpm2.RSAEKTemplate, testRSA(t, 0))) }
func rsaSRK(t testing.TB) []byte { return marshal2B(rsaPublic(tpm2.RSASRKTemplate, testRSA(t, 1))) }
func eccEK(t testing.TB) []byte  { return marshal2B(eccPublic(tpm2.ECCEKTemplate, newECDH(t))) }
func eccSRK(t testing.TB) []byte { return marshal2B(eccPublic(tpm2.ECCSRKTemplate, newECDH(t))) }

// errReader fails every read, to check that randomness failures surface.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errTestRand }

var errTestRand = errors.New("test rand")
