package tpmattest

import (
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/sas"
)

// BenchmarkNewChallenge measures the first leg on the server: parsing and
// checking both keys, then building the blob (go test -bench NewChallenge).
func BenchmarkNewChallenge(b *testing.B) {
	for _, bb := range []struct {
		name    string
		ek, srk []byte
	}{
		{"rsa2048-ek/rsa2048-srk", rsaEK(b), rsaSRK(b)},
		{"rsa2048-ek/p256-srk", rsaEK(b), eccSRK(b)},
		{"p256-ek/p256-srk", eccEK(b), eccSRK(b)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NewChallenge(nil, bb.ek, bb.srk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseEK is the part of the first leg spent on checking one key.
func BenchmarkParseEK(b *testing.B) {
	ek := rsaEK(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEK(ek); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifySAS is the second leg's cryptographic check.
func BenchmarkVerifySAS(b *testing.B) {
	key := make([]byte, HMACKeySize)
	now := time.Unix(1_700_000_000, 0)
	token := sas.Sign(key, sas.Resource("0ne00000A0A", "dev-1"), now.Add(time.Hour), sas.DefaultKeyName, true)
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifySAS(token, key, "0ne00000A0A", "dev-1", now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPendingRoundTrip is the store encoding of both legs.
func BenchmarkPendingRoundTrip(b *testing.B) {
	p := &PendingChallenge{RegistrationID: "dev-1", Key: make([]byte, HMACKeySize), Expires: time.Unix(1_700_000_000, 0)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnmarshalPendingChallenge(p.Marshal()); err != nil {
			b.Fatal(err)
		}
	}
}
