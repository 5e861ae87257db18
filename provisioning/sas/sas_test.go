package sas

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// Vectors generated independently with Python's hmac/urllib, each in the
// shape one SDK sends (PROTOCOL.md §1.4): the device key is base64
// "MDEy...", se is 1900000000 (C#: one day later, its 1-day TTL).
const (
	testKeyB64 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVm"
	testScope  = "0ne00000A0A"
)

var sdkVectors = []struct {
	sdk, token, regID string
	keyName           string
	hasKeyName        bool
}{
	{"C (lower-case %2f)", "SharedAccessSignature sr=0ne00000A0A%2fregistrations%2fdev1&sig=J%2F66naxm5YoQ3dkQKSXf3ZUL1rnF094GdEpXBef3iMs%3D&se=1900000000&skn=registration", "dev1", "registration", true},
	{"embedded C (lower-case %2f, no skn)", "SharedAccessSignature sr=0ne00000A0A%2fregistrations%2fdev1&sig=J%2f66naxm5YoQ3dkQKSXf3ZUL1rnF094GdEpXBef3iMs%3d&se=1900000000", "dev1", "", false},
	{"Node symmetric key (raw sr, skn before se)", "SharedAccessSignature sr=0ne00000A0A/registrations/dev1&sig=9D0QyxMd9CvMxzAhmeo2XTAV3avWhwXkCd17t4OelAI%3D&skn=registration&se=1900000000", "dev1", "registration", true},
	{"Node TPM (upper-case %2F)", "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fdev1&sig=wBz5T6P1Wf9fKvYPSrIZgZqZaZIsFeAz8Gr4Hw%2FG4yY%3D&se=1900000000&skn=registration", "dev1", "registration", true},
	{"Python (no skn)", "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fdev1&sig=wBz5T6P1Wf9fKvYPSrIZgZqZaZIsFeAz8Gr4Hw%2FG4yY%3D&se=1900000000", "dev1", "", false},
	{"Java (raw sr, empty skn)", "SharedAccessSignature sr=0ne00000A0A/registrations/dev1&sig=9D0QyxMd9CvMxzAhmeo2XTAV3avWhwXkCd17t4OelAI%3D&se=1900000000&skn=", "dev1", "", true},
	{"C# (1-day TTL)", "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fdev1&sig=x5Cuw7HIHX8xE3KENUwGdhyb1d2yUw%2F7Qc3PEmsBuS8%3D&se=1900086400&skn=registration", "dev1", "registration", true},
	{"Python, ID with ':' (%3A)", "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fdev%3A1.a&sig=e%2FWDjmnUCuW34TpFV4eczlmZOW4Vxj36PX%2B6Da61vkA%3D&se=1900000000", "dev:1.a", "", false},
}

func testKey(t testing.TB) []byte {
	t.Helper()
	k, err := DecodeKey(testKeyB64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedAt is a time when every vector is valid.
var signedAt = time.Unix(1900000000-3600, 0)

func TestSDKVectorsVerify(t *testing.T) {
	key := testKey(t)
	for _, v := range sdkVectors {
		t.Run(v.sdk, func(t *testing.T) {
			tok, err := Parse(v.token)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tok.KeyName != v.keyName || tok.HasKeyName != v.hasKeyName {
				t.Errorf("skn = %q (present %v), want %q (%v)", tok.KeyName, tok.HasKeyName, v.keyName, v.hasKeyName)
			}
			if err := tok.Verify(key, Resource(testScope, v.regID), signedAt, DefaultSkew); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// Registration IDs are case-insensitive, and so is the sr compare.
			if err := tok.Verify(key, Resource(strings.ToLower(testScope), strings.ToUpper(v.regID)), signedAt, DefaultSkew); err != nil {
				t.Fatalf("Verify with other case: %v", err)
			}
		})
	}
}

func TestTamperedTokensFail(t *testing.T) {
	key := testKey(t)
	base := sdkVectors[3].token // Node TPM
	res := Resource(testScope, "dev1")
	tests := []struct {
		name, token string
		want        error
	}{
		{"sig of another token", strings.Replace(base, "wBz5T6P1Wf9fKvYPSrIZgZqZaZIsFeAz8Gr4Hw%2FG4yY%3D", "9D0QyxMd9CvMxzAhmeo2XTAV3avWhwXkCd17t4OelAI%3D", 1), ErrBadSignature},
		{"one sig bit", strings.Replace(base, "sig=wBz5", "sig=wBz6", 1), ErrBadSignature},
		{"se extended", strings.Replace(base, "se=1900000000", "se=1900003600", 1), ErrBadSignature},
		{"se with leading zero", strings.Replace(base, "se=1900000000", "se=01900000000", 1), ErrBadSignature},
		{"sr re-encoded in lower case", strings.Replace(base, "%2F", "%2f", 2), ErrBadSignature},
		{"sr for another device", strings.Replace(base, "dev1", "dev2", 1), ErrWrongResource},
		{"sr for another scope", strings.Replace(base, "0ne00000A0A", "0ne00000B0B", 1), ErrWrongResource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Parse(tt.token)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = tok.Verify(key, res, signedAt, DefaultSkew)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	tok, _ := Parse(base)
	if err := tok.Verify(append([]byte{1}, key...), res, signedAt, DefaultSkew); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong key: %v", err)
	}
	if err := tok.Verify(nil, res, signedAt, DefaultSkew); !errors.Is(err, ErrBadSignature) {
		t.Errorf("nil key: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	key := testKey(t)
	tok, err := Parse(sdkVectors[4].token)
	if err != nil {
		t.Fatal(err)
	}
	res := Resource(testScope, "dev1")
	exp := time.Unix(1900000000, 0)
	tests := []struct {
		now  time.Time
		skew time.Duration
		want error
	}{
		{exp, 0, nil},
		{exp.Add(time.Second), 0, ErrExpired},
		{exp.Add(DefaultSkew), DefaultSkew, nil},
		{exp.Add(DefaultSkew + time.Second), DefaultSkew, ErrExpired},
	}
	for _, tt := range tests {
		err := tok.Verify(key, res, tt.now, tt.skew)
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("Verify at %v skew %v = %v, want %v", tt.now, tt.skew, err, tt.want)
		}
	}
	// An expired token with a bad signature reports the signature.
	bad, _ := Parse(strings.Replace(sdkVectors[4].token, "sig=wBz5", "sig=wBz6", 1))
	if err := bad.Verify(key, res, exp.Add(time.Hour), 0); !errors.Is(err, ErrBadSignature) {
		t.Errorf("expired and forged: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	const sig = "wBz5T6P1Wf9fKvYPSrIZgZqZaZIsFeAz8Gr4Hw%2FG4yY%3D"
	tests := []struct {
		name, token, field string
	}{
		{"empty", "", ""},
		{"no prefix", "sr=a&sig=" + sig + "&se=1", ""},
		{"wrong prefix case", "sharedaccesssignature sr=a&sig=" + sig + "&se=1", ""},
		{"prefix only", Prefix, "sr"},
		{"missing sr", Prefix + "sig=" + sig + "&se=1", "sr"},
		{"empty sr", Prefix + "sr=&sig=" + sig + "&se=1", "sr"},
		{"missing sig", Prefix + "sr=a&se=1", "sig"},
		{"missing se", Prefix + "sr=a&sig=" + sig, "se"},
		{"field without =", Prefix + "sr=a&sig=" + sig + "&se=1&skn", ""},
		{"empty field", Prefix + "sr=a&&sig=" + sig + "&se=1", ""},
		{"duplicate sr", Prefix + "sr=a&sr=b&sig=" + sig + "&se=1", "sr"},
		{"duplicate sig", Prefix + "sr=a&sig=" + sig + "&sig=" + sig + "&se=1", "sig"},
		{"duplicate se", Prefix + "sr=a&sig=" + sig + "&se=1&se=2", "se"},
		{"duplicate skn", Prefix + "sr=a&sig=" + sig + "&se=1&skn=&skn=registration", "skn"},
		{"se not a number", Prefix + "sr=a&sig=" + sig + "&se=soon", "se"},
		{"se negative", Prefix + "sr=a&sig=" + sig + "&se=-1", "se"},
		{"se fractional", Prefix + "sr=a&sig=" + sig + "&se=1.5", "se"},
		{"se huge", Prefix + "sr=a&sig=" + sig + "&se=99999999999999999999", "se"},
		{"sig not base64", Prefix + "sr=a&sig=!!!!&se=1", "sig"},
		{"sig too short", Prefix + "sr=a&sig=AAAA&se=1", "sig"},
		{"sig bad escape", Prefix + "sr=a&sig=%zz&se=1", "sig"},
		{"sr bad escape", Prefix + "sr=a%2&sig=" + sig + "&se=1", "sr"},
		{"too long", Prefix + "sr=" + strings.Repeat("a", MaxTokenLen) + "&sig=" + sig + "&se=1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.token)
			e, ok := errors.AsType[*Error](err)
			if !ok || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error = %v, want ErrMalformed", err)
			}
			if e.Field != tt.field {
				t.Fatalf("Parse error %q names field %q, want %q", err, e.Field, tt.field)
			}
		})
	}
}

func TestParseTolerates(t *testing.T) {
	key := testKey(t)
	res := Resource(testScope, "dev1")
	base := sdkVectors[4].token // Python, sig ends in %3D
	for name, tok := range map[string]string{
		"unknown field":       base + "&foo=bar",
		"unpadded sig":        strings.Replace(base, "%3D&", "&", 1),
		"raw base64 sig":      strings.Replace(strings.Replace(base, "Hw%2FG4", "Hw/G4", 1), "%3D", "=", 1),
		"fields reordered":    Prefix + "se=1900000000&sig=wBz5T6P1Wf9fKvYPSrIZgZqZaZIsFeAz8Gr4Hw%2FG4yY%3D&sr=0ne00000A0A%2Fregistrations%2Fdev1",
		"lower-case sig hex":  strings.Replace(base, "Hw%2FG4", "Hw%2fG4", 1),
		"skn first and empty": Prefix + "skn=&sr=0ne00000A0A%2Fregistrations%2Fdev1&sig=wBz5T6P1Wf9fKvYPSrIZgZqZaZIsFeAz8Gr4Hw%2FG4yY%3D&se=1900000000",
	} {
		tk, err := Parse(tok)
		if err != nil {
			t.Errorf("%s: Parse: %v", name, err)
			continue
		}
		if err := tk.Verify(key, res, signedAt, DefaultSkew); err != nil {
			t.Errorf("%s: Verify: %v", name, err)
		}
	}
}

func TestSignRoundTrip(t *testing.T) {
	key := testKey(t)
	exp := time.Unix(1900000000, 0)
	res := Resource(testScope, "dev1")
	// Sign reproduces the SDK shapes byte for byte.
	if got, want := Sign(key, res, exp, "", true), sdkVectors[4].token; got != want {
		t.Errorf("Sign(encoded) = %q, want the Python token %q", got, want)
	}
	if got, want := Sign(key, res, exp, DefaultKeyName, true), sdkVectors[3].token; got != want {
		t.Errorf("Sign(encoded, skn) = %q, want the Node TPM token %q", got, want)
	}
	for _, enc := range []bool{true, false} {
		for _, skn := range []string{"", DefaultKeyName} {
			tok, err := Parse(Sign(key, res, exp, skn, enc))
			if err != nil {
				t.Fatalf("Parse(Sign(enc=%v, skn=%q)): %v", enc, skn, err)
			}
			if err := tok.Verify(key, res, signedAt, 0); err != nil {
				t.Errorf("Verify(Sign(enc=%v, skn=%q)): %v", enc, skn, err)
			}
			if tok.KeyName != skn {
				t.Errorf("skn = %q, want %q", tok.KeyName, skn)
			}
		}
	}
}

func TestDeriveDeviceKey(t *testing.T) {
	// The example from the Azure DPS symmetric-key attestation docs.
	group, err := DecodeKey("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==")
	if err != nil {
		t.Fatal(err)
	}
	got := base64.StdEncoding.EncodeToString(DeriveDeviceKey(group, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"))
	if want := "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="; got != want {
		t.Fatalf("DeriveDeviceKey = %s, want %s", got, want)
	}
	// A token signed with the derived key verifies with it, not with the group key.
	dk := DeriveDeviceKey(group, "dev1")
	tok, err := Parse(Sign(dk, Resource(testScope, "dev1"), signedAt.Add(time.Hour), DefaultKeyName, true))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.VerifySignature(dk); err != nil {
		t.Errorf("derived key: %v", err)
	}
	if err := tok.VerifySignature(group); !errors.Is(err, ErrBadSignature) {
		t.Errorf("group key: %v", err)
	}
}

func TestDecodeKey(t *testing.T) {
	for _, k := range []string{"", "not base64", base64.StdEncoding.EncodeToString(make([]byte, 15)), base64.StdEncoding.EncodeToString(make([]byte, 65))} {
		if _, err := DecodeKey(k); !errors.Is(err, ErrBadKey) {
			t.Errorf("DecodeKey(%q) = %v", k, err)
		}
	}
	for _, n := range []int{16, 32, 64} {
		if k, err := DecodeKey(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n))); err != nil || len(k) != n {
			t.Errorf("DecodeKey(%d bytes) = %d, %v", n, len(k), err)
		}
	}
}

func TestNoSecretsPrinted(t *testing.T) {
	tok, err := Parse(sdkVectors[3].token)
	if err != nil {
		t.Fatal(err)
	}
	const sigFragment = "wBz5T6P1"
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("token", "t", tok)
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok), logs.String()} {
		if strings.Contains(s, sigFragment) {
			t.Errorf("signature printed: %s", s)
		}
	}
	bad, _ := Parse(strings.Replace(sdkVectors[3].token, "sig=wBz5", "sig=wBz6", 1))
	if err := bad.Verify(testKey(t), Resource(testScope, "dev1"), signedAt, 0); err == nil || strings.Contains(err.Error(), "wBz") {
		t.Errorf("error %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, v := range sdkVectors {
		f.Add(v.token)
	}
	f.Add(Prefix + "sr=a&sr=b")
	key := testKey(f)
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v is not ErrMalformed", err)
			}
			return
		}
		// Verification never panics and re-signing what was parsed verifies.
		_ = tok.Verify(key, tok.Resource, signedAt, DefaultSkew)
		again, err := Parse(Sign(key, tok.Resource, tok.Expiry, tok.KeyName, true))
		if err != nil {
			t.Fatalf("re-signed token does not parse: %v", err)
		}
		if err := again.Verify(key, tok.Resource, tok.Expiry, 0); err != nil {
			t.Fatalf("re-signed token does not verify: %v", err)
		}
	})
}

func BenchmarkVerifyOnly(b *testing.B) {
	key := testKey(b)
	res := Resource(testScope, "dev1")
	tok, err := Parse(sdkVectors[3].token)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := tok.Verify(key, res, signedAt, DefaultSkew); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is what a register request costs: parse plus verify.
func BenchmarkVerify(b *testing.B) {
	key := testKey(b)
	res := Resource(testScope, "dev1")
	tok := sdkVectors[3].token
	b.ReportAllocs()
	for b.Loop() {
		t, err := Parse(tok)
		if err != nil {
			b.Fatal(err)
		}
		if err := t.Verify(key, res, signedAt, DefaultSkew); err != nil {
			b.Fatal(err)
		}
	}
}
