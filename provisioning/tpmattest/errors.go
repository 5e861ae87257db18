package tpmattest

import (
	"errors"
	"strconv"
)

// DPS error codes of TPM attestation (HTTP status x 1000 + suffix; see
// provisioning/wire). CodeBadSAS is Azure's generic "Unauthorized"; the
// others are dpsbroker's own, chosen so that a device owner can tell the
// causes apart. All are permanent (below 429): retrying the same request
// cannot succeed.
const (
	// CodeMalformedKey: tpm.endorsementKey or tpm.storageRootKey is not
	// base64 of a marshalled TPM2B_PUBLIC within the size limit.
	CodeMalformedKey = 400010
	// CodeUnsupportedKey: the key parses but is not an acceptable EK or SRK
	// (attributes, algorithms, key size).
	CodeUnsupportedKey = 400011
	// CodeMalformedChallenge: a stored challenge or an authenticationKey
	// blob does not decode. On the server this is a store fault.
	CodeMalformedChallenge = 400012
	// CodeMalformedEKCertificate: tpm.endorsementKeyCertificate (or an
	// entry of its chain) is not base64 of a DER X.509 certificate.
	CodeMalformedEKCertificate = 400013
	// CodeBadSAS: the SAS token is malformed, names another resource, does
	// not verify under the challenge key, or has expired.
	CodeBadSAS = 401000
	// CodeEKMismatch: the presented EK is not the enrolled one.
	CodeEKMismatch = 401010
	// CodeNoChallenge: there is no pending challenge for this registration
	// ID and EK (never issued, already answered, or expired).
	CodeNoChallenge = 401011
	// CodeChallengeMismatch: the pending challenge was issued for another
	// registration ID or SRK.
	CodeChallengeMismatch = 401012
)

// Error is a refusal of this package. Code is the DPS error code to answer
// with (errors.As finds it); Msg is safe to send to the device and to log:
// it never holds key bytes. Err, when set, is the underlying cause (for
// example a *sas.Error).
type Error struct {
	Code int
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	s := strconv.Itoa(e.Code) + " " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the Code of the *Error in err's chain, or 0.
func ErrorCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func newError(code int, msg string) *Error { return &Error{Code: code, Msg: msg} }
