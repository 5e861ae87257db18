package provisioning

import (
	"fmt"
	"strings"
)

// Limits on identifiers (DPS service API).
const (
	// MaxRegistrationIDLen is the general limit on registration IDs.
	MaxRegistrationIDLen = 128
	// MaxX509RegistrationIDLen is the limit for X.509 devices: the ID is the
	// certificate subject CN, which X.520 caps at 64 characters.
	MaxX509RegistrationIDLen = 64
)

// ValidateRegistrationID checks a registration ID against the DPS rules:
// 1 to max characters, ASCII letters, digits and "-._:", starting with a
// letter or digit and ending with a letter, digit or "-".
func ValidateRegistrationID(id string, max int) error {
	switch {
	case id == "":
		return fmt.Errorf("registration ID is empty")
	case len(id) > max:
		return fmt.Errorf("registration ID is %d characters long, the limit is %d", len(id), max)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '-' && c != '.' && c != '_' && c != ':' {
			return fmt.Errorf("registration ID has character %q at position %d; only letters, digits and the characters - . _ : are allowed", c, i)
		}
	}
	if !isAlnum(id[0]) {
		return fmt.Errorf("registration ID must start with a letter or digit")
	}
	if last := id[len(id)-1]; !isAlnum(last) && last != '-' {
		return fmt.Errorf("registration ID must end with a letter, digit or -")
	}
	return nil
}

// RegistrationKey is the canonical form stores key registration IDs by:
// DPS registration IDs are case-insensitive.
func RegistrationKey(id string) string { return strings.ToLower(id) }

func isAlnum(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}
