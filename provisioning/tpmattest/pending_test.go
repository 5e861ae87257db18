package tpmattest

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/sas"
)

var testNow = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

func TestPendingRoundTrip(t *testing.T) {
	ch, err := NewChallenge(nil, rsaEK(t), rsaSRK(t))
	if err != nil {
		t.Fatal(err)
	}
	p := ch.Pending("Dev-1", testNow, 0)
	if !p.Expires.Equal(testNow.Add(DefaultChallengeTTL)) {
		t.Errorf("Expires = %v", p.Expires)
	}
	got, err := UnmarshalPendingChallenge(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got.RegistrationID != p.RegistrationID || got.EKDigest != p.EKDigest || got.SRKDigest != p.SRKDigest ||
		!bytes.Equal(got.Key, p.Key) || !got.Expires.Equal(p.Expires) {
		t.Errorf("round trip: got %v, want %v", got, p)
	}
	b := p.Marshal()
	for i := range len(b) {
		if _, err := UnmarshalPendingChallenge(b[:i]); ErrorCode(err) != CodeMalformedChallenge {
			t.Fatalf("truncated to %d bytes: %v", i, err)
		}
	}
	if _, err := UnmarshalPendingChallenge(append(bytes.Clone(b), 0)); ErrorCode(err) != CodeMalformedChallenge {
		t.Errorf("trailing byte: %v", err)
	}
	b[0] = 9
	if _, err := UnmarshalPendingChallenge(b); ErrorCode(err) != CodeMalformedChallenge {
		t.Errorf("unknown version: %v", err)
	}
}

func TestChallengeKey(t *testing.T) {
	ek, _ := ParseEK(rsaEK(t))
	other, _ := ParseEK(eccEK(t))
	if ChallengeKey("Dev-1", ek.Digest) != ChallengeKey("dev-1", ek.Digest) {
		t.Error("ChallengeKey depends on the registration ID's case")
	}
	if ChallengeKey("dev-1", ek.Digest) == ChallengeKey("dev-1", other.Digest) ||
		ChallengeKey("dev-1", ek.Digest) == ChallengeKey("dev-2", ek.Digest) {
		t.Error("ChallengeKey does not separate EKs or registration IDs")
	}
}

func TestPendingCheck(t *testing.T) {
	ek, _ := ParseEK(rsaEK(t))
	srk, _ := ParseSRK(rsaSRK(t))
	otherEK, _ := ParseEK(eccEK(t))
	otherSRK, _ := ParseSRK(eccSRK(t))
	ch, err := NewKeyChallenge(nil, ek, srk)
	if err != nil {
		t.Fatal(err)
	}
	p := ch.Pending("dev-1", testNow, 10*time.Second)
	for _, tt := range []struct {
		name    string
		regID   string
		ek, srk *Key
		now     time.Time
		code    int
	}{
		{"same device", "dev-1", ek, srk, testNow.Add(9 * time.Second), 0},
		{"registration ID case", "DEV-1", ek, srk, testNow, 0},
		{"other registration", "dev-2", ek, srk, testNow, CodeChallengeMismatch},
		{"other EK", "dev-1", otherEK, srk, testNow, CodeChallengeMismatch},
		{"other SRK", "dev-1", ek, otherSRK, testNow, CodeChallengeMismatch},
		{"no SRK", "dev-1", ek, nil, testNow, CodeChallengeMismatch},
		{"expired", "dev-1", ek, srk, testNow.Add(10 * time.Second), CodeNoChallenge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorCode(p.Check(tt.regID, tt.ek, tt.srk, tt.now)); got != tt.code {
				t.Errorf("code = %d, want %d", got, tt.code)
			}
		})
	}
}

func TestVerifySAS(t *testing.T) {
	ch, err := NewChallenge(nil, rsaEK(t), rsaSRK(t))
	if err != nil {
		t.Fatal(err)
	}
	p := ch.Pending("dev-1", testNow, 0)
	res := sas.Resource("0ne00000A0A", "dev-1")
	good := sas.Sign(ch.Key, res, testNow.Add(time.Hour), sas.DefaultKeyName, true)
	for _, tt := range []struct {
		name  string
		token string
		now   time.Time
		kind  error
	}{
		{"good", good, testNow, nil},
		{"raw sr", sas.Sign(ch.Key, res, testNow.Add(time.Hour), "", false), testNow, nil},
		{"wrong key", sas.Sign(bytes.Repeat([]byte{1}, 32), res, testNow.Add(time.Hour), sas.DefaultKeyName, true), testNow, sas.ErrBadSignature},
		{"other registration", sas.Sign(ch.Key, sas.Resource("0ne00000A0A", "dev-2"), testNow.Add(time.Hour), "", true), testNow, sas.ErrWrongResource},
		{"expired", good, testNow.Add(2 * time.Hour), sas.ErrExpired},
		{"malformed", "Bearer x", testNow, sas.ErrMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := p.VerifySAS(tt.token, "0ne00000A0A", tt.now)
			if tt.kind == nil {
				if err != nil {
					t.Fatalf("VerifySAS: %v", err)
				}
				return
			}
			if ErrorCode(err) != CodeBadSAS || !errors.Is(err, tt.kind) {
				t.Errorf("err = %v, want code %d wrapping %v", err, CodeBadSAS, tt.kind)
			}
		})
	}
}
