package wire

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// azureTimeLayout is how Azure DPS prints times: UTC with exactly seven
// fractional digits, e.g. "2020-04-10T03:11:13.0276997Z".
const azureTimeLayout = "2006-01-02T15:04:05.0000000Z"

// Time is a timestamp in DPS JSON. It marshals like Azure (UTC, seven
// fractional digits) and unmarshals any RFC 3339 time or null. The zero
// Time is left out of structs by the "omitzero" tag.
type Time struct {
	time.Time
}

// NewTime wraps t.
func NewTime(t time.Time) Time { return Time{Time: t} }

// MarshalJSON writes the Azure layout. Sub-100ns precision is truncated,
// as .NET ticks are.
func (t Time) MarshalJSON() ([]byte, error) {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("wire.Time: year %d outside [0,9999]", y)
	}
	b := make([]byte, 0, len(azureTimeLayout)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, azureTimeLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON accepts an RFC 3339 string with any number of fractional
// digits and any offset, or null (the zero Time).
func (t *Time) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*t = Time{}
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("wire.Time: want an RFC 3339 string, got %.40q", b)
	}
	s := string(b[1 : len(b)-1])
	// RFC 3339 allows a lower-case "t" and "z"; time.Parse does not.
	if len(s) > 10 && s[10] == 't' {
		s = s[:10] + "T" + s[11:]
	}
	if strings.HasSuffix(s, "z") {
		s = s[:len(s)-1] + "Z"
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("wire.Time: %w", err)
	}
	t.Time = v
	return nil
}
