package wire

import (
	"encoding/json"
	"fmt"
)

// DecodeOperationStatus reads a 200 or 202 body on the device side, with
// the checks the SDKs make: the status must be known, and an assigning
// operation must carry its operationId.
func DecodeOperationStatus(body []byte) (*RegistrationOperationStatus, error) {
	var s RegistrationOperationStatus
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("operation status: %w", err)
	}
	if !s.Status.Known() {
		return nil, fmt.Errorf("operation status: unknown status %q", s.Status)
	}
	if s.Status == StatusAssigning && s.OperationID == "" {
		return nil, fmt.Errorf("operation status: assigning without operationId")
	}
	return &s, nil
}

// DecodeErrorDetails reads an error body on the device side.
func DecodeErrorDetails(body []byte) (*ErrorDetails, error) {
	var e ErrorDetails
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("error body: %w", err)
	}
	if e.ErrorCode == 0 {
		return nil, fmt.Errorf("error body: no errorCode")
	}
	return &e, nil
}

// DecodeTPMChallenge reads the 401 body that answers a TPM register
// request. A 401 without authenticationKey is an ordinary error.
func DecodeTPMChallenge(body []byte) (*TPMChallenge, error) {
	var c TPMChallenge
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("tpm challenge: %w", err)
	}
	if c.AuthenticationKey == "" {
		return nil, fmt.Errorf("tpm challenge: no authenticationKey")
	}
	return &c, nil
}
