// Package sas parses, signs and verifies the SharedAccessSignature tokens
// that symmetric-key devices send as their MQTT password, and that TPM
// devices sign with their imported key (PROTOCOL.md §1.4).
//
// Every SDK builds the token a little differently (sr raw or URL-encoded
// with either hex case, skn present, empty or absent, fields in any order),
// and all of them work against Azure. So Verify HMACs the sr value exactly
// as it was sent, and only then compares its decoded form with the
// expected resource, ignoring case.
//
// Nothing in this package prints a key or a signature: errors name the
// field, and Token's String redacts sig.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every token.
const Prefix = "SharedAccessSignature "

// DefaultKeyName is the skn every SDK that sends one uses.
const DefaultKeyName = "registration"

// DefaultSkew is the clock skew Verify callers should allow: the Azure SDK
// constant (5 minutes).
const DefaultSkew = 5 * time.Minute

// MaxTokenLen bounds what Parse reads. Real tokens are about 150 bytes.
const MaxTokenLen = 2048

// Sentinel kinds of failure; every error from this package wraps exactly
// one of them, so callers branch with errors.Is.
var (
	// ErrMalformed: the token does not have the SharedAccessSignature
	// grammar. At CONNECT this is a refusal; it never reaches the HMAC.
	ErrMalformed = errors.New("malformed SAS token")
	// ErrWrongResource: sr names another scope or registration.
	ErrWrongResource = errors.New("SAS token for another resource")
	// ErrBadSignature: sig is not the HMAC of sr and se under the key.
	ErrBadSignature = errors.New("SAS signature does not verify")
	// ErrExpired: se is in the past, beyond the allowed skew.
	ErrExpired = errors.New("SAS token expired")
)

// Error is a failure of this package: Kind is one of the sentinels above
// and Msg a reason safe to log (it never holds key or signature bytes).
type Error struct {
	Kind error
	// Field is the token field concerned ("sr", "sig", "se", "skn"), if any.
	Field string
	Msg   string
}

func (e *Error) Error() string {
	s := e.Kind.Error()
	if e.Field != "" {
		s += ": " + e.Field
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// Unwrap returns the sentinel kind.
func (e *Error) Unwrap() error { return e.Kind }

func malformed(field, msg string) *Error { return &Error{Kind: ErrMalformed, Field: field, Msg: msg} }

// Token is a parsed SharedAccessSignature. The raw fields are kept as sent
// because the signature covers them byte for byte.
type Token struct {
	// RawResource is sr exactly as sent (encoded or not).
	RawResource string
	// Resource is sr URL-decoded, e.g. "0ne00000A0A/registrations/dev1".
	Resource string
	// RawExpiry is se exactly as sent.
	RawExpiry string
	// Expiry is se as a time.
	Expiry time.Time
	// KeyName is skn, URL-decoded; empty when absent or empty. It is not
	// signed and Verify ignores it.
	KeyName string
	// HasKeyName tells "skn=" (Java) from no skn at all (Python).
	HasKeyName bool

	sig []byte // decoded signature, kept unexported so it is never printed
}

// Parse reads a token: Prefix, then "&"-separated key=value fields in any
// order. sr, sig and se are required and skn is optional; a repeated field
// is refused, and unknown fields are ignored as the Azure parser does.
func Parse(token string) (*Token, error) {
	if len(token) > MaxTokenLen {
		return nil, malformed("", "longer than "+strconv.Itoa(MaxTokenLen)+" bytes")
	}
	rest, ok := strings.CutPrefix(token, Prefix)
	if !ok {
		return nil, malformed("", `does not start with "SharedAccessSignature "`)
	}
	var sr, sig, se, skn string
	var haveSR, haveSig, haveSE, haveSkn bool
	for rest != "" {
		var field string
		field, rest, _ = strings.Cut(rest, "&")
		key, val, ok := strings.Cut(field, "=")
		if !ok || key == "" {
			return nil, malformed("", "field without key=value")
		}
		var dst *string
		var seen *bool
		switch key {
		case "sr":
			dst, seen = &sr, &haveSR
		case "sig":
			dst, seen = &sig, &haveSig
		case "se":
			dst, seen = &se, &haveSE
		case "skn":
			dst, seen = &skn, &haveSkn
		default:
			continue
		}
		if *seen {
			return nil, malformed(key, "given twice")
		}
		*dst, *seen = val, true
	}
	switch {
	case !haveSR || sr == "":
		return nil, malformed("sr", "missing")
	case !haveSig || sig == "":
		return nil, malformed("sig", "missing")
	case !haveSE || se == "":
		return nil, malformed("se", "missing")
	}

	t := &Token{RawResource: sr, RawExpiry: se, HasKeyName: haveSkn}
	var err error
	// PathUnescape, not QueryUnescape: a raw "+" in a base64 sig must stay
	// a "+", and neither field ever carries an encoded space.
	if t.Resource, err = url.PathUnescape(sr); err != nil {
		return nil, malformed("sr", "bad percent-encoding")
	}
	if t.KeyName, err = url.PathUnescape(skn); err != nil {
		return nil, malformed("skn", "bad percent-encoding")
	}
	if t.sig, err = decodeSig(sig); err != nil {
		return nil, err
	}
	secs, err := strconv.ParseUint(se, 10, 63)
	if err != nil || secs > maxUnix {
		return nil, malformed("se", "not a Unix time in seconds")
	}
	t.Expiry = time.Unix(int64(secs), 0).UTC()
	return t, nil
}

// maxUnix keeps Expiry within what time.Time and Add(skew) handle.
const maxUnix = 1 << 40

func decodeSig(sig string) ([]byte, error) {
	s, err := url.PathUnescape(sig)
	if err != nil {
		return nil, malformed("sig", "bad percent-encoding")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		// Tolerate a signature whose padding was dropped.
		if b, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			return nil, malformed("sig", "not base64")
		}
	}
	if len(b) != sha256.Size {
		return nil, malformed("sig", "not an HMAC-SHA256 ("+strconv.Itoa(len(b))+" bytes)")
	}
	return b, nil
}

// Verify checks the token for expectedResource ("{idScope}/registrations/
// {registrationId}", see Resource) at time now, allowing skew: the decoded
// sr must equal expectedResource ignoring case, sig must be the HMAC of the
// raw sr, "\n" and the raw se under key (compared in constant time), and se
// must not be older than now-skew. The failure wraps ErrWrongResource,
// ErrBadSignature or ErrExpired, checked in that order, so that "expired"
// is reported only for authentic tokens.
func (t *Token) Verify(key []byte, expectedResource string, now time.Time, skew time.Duration) error {
	if err := t.CheckResource(expectedResource); err != nil {
		return err
	}
	if err := t.VerifySignature(key); err != nil {
		return err
	}
	return t.CheckExpiry(now, skew)
}

// CheckResource is the resource part of Verify.
func (t *Token) CheckResource(expectedResource string) error {
	if !strings.EqualFold(t.Resource, expectedResource) {
		return &Error{Kind: ErrWrongResource, Field: "sr", Msg: "names " + strconv.Quote(t.Resource)}
	}
	return nil
}

// VerifySignature is the signature part of Verify. It lets a caller that
// must try several keys (primary and secondary, or every symmetric-key
// group) check the resource and expiry once.
func (t *Token) VerifySignature(key []byte) error {
	if len(key) == 0 {
		return &Error{Kind: ErrBadSignature, Msg: "no key"}
	}
	if !hmac.Equal(t.sig, mac(key, t.RawResource, t.RawExpiry)) {
		return &Error{Kind: ErrBadSignature}
	}
	return nil
}

// CheckExpiry is the expiry part of Verify.
func (t *Token) CheckExpiry(now time.Time, skew time.Duration) error {
	if now.After(t.Expiry.Add(skew)) {
		return &Error{Kind: ErrExpired, Field: "se", Msg: "expired at " + t.Expiry.Format(time.RFC3339)}
	}
	return nil
}

// String describes the token without its signature.
func (t *Token) String() string {
	return "SharedAccessSignature sr=" + t.RawResource + "&sig=REDACTED&se=" + t.RawExpiry
}

// GoString keeps %#v from printing the signature.
func (t *Token) GoString() string { return t.String() }

// LogValue keeps slog from printing the signature.
func (t *Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("sr", t.Resource),
		slog.Time("se", t.Expiry),
		slog.String("skn", t.KeyName),
	)
}

func mac(key []byte, sr, se string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(sr))
	h.Write([]byte{'\n'})
	h.Write([]byte(se))
	return h.Sum(nil)
}

// Resource is the sr a device of registrationID in idScope signs, before
// any encoding.
func Resource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// Sign builds a token as a device does. With encodeResource, sr is
// URL-encoded (upper-case hex, as the C#, Python and Node TPM SDKs send
// it); otherwise it is sent raw (Node symmetric key, Java). An empty keyName
// leaves skn out. key is the raw (base64-decoded or derived) device key.
func Sign(key []byte, resource string, expiry time.Time, keyName string, encodeResource bool) string {
	sr := resource
	if encodeResource {
		sr = escape(resource)
	}
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := base64.StdEncoding.EncodeToString(mac(key, sr, se))
	var b strings.Builder
	b.Grow(len(Prefix) + len(sr) + len(sig) + len(se) + len(keyName) + 32)
	b.WriteString(Prefix)
	b.WriteString("sr=")
	b.WriteString(sr)
	b.WriteString("&sig=")
	b.WriteString(url.QueryEscape(sig))
	b.WriteString("&se=")
	b.WriteString(se)
	if keyName != "" {
		b.WriteString("&skn=")
		b.WriteString(escape(keyName))
	}
	return b.String()
}

// escape percent-encodes like Python's quote(s, safe=""): a space becomes
// %20, not "+", so that Parse's PathUnescape gives s back.
func escape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// DeriveDeviceKey is the key of registrationID in a symmetric-key
// enrollment group: HMAC-SHA256(groupKey, registrationID), where groupKey
// is the base64-decoded group key. A server should try keys derived from
// both the group's primary and secondary key.
func DeriveDeviceKey(groupKey []byte, registrationID string) []byte {
	h := hmac.New(sha256.New, groupKey)
	h.Write([]byte(registrationID))
	return h.Sum(nil)
}

// Key length limits of DPS symmetric keys (decoded bytes).
const (
	MinKeyLen = 16
	MaxKeyLen = 64
)

// ErrBadKey reports an enrollment key that is not base64 of 16 to 64 bytes.
var ErrBadKey = errors.New("symmetric key must be base64 of 16 to 64 bytes")

// DecodeKey decodes an enrollment's base64 key and checks its length. The
// error never contains the key.
func DecodeKey(b64 string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(k) < MinKeyLen || len(k) > MaxKeyLen {
		return nil, ErrBadKey
	}
	return k, nil
}
