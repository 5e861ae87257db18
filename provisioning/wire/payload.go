package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
)

// MaxRequestBody is the largest request body the broker reads: the Azure
// DPS maximum message size (96 KB).
const MaxRequestBody = 96 * 1024

// Status is the state of a registration operation (DPS enumeration).
type Status string

// Statuses. Assigning is the only in-progress status the broker sends:
// Node and Python treat Unassigned in a 2xx body as an error, and reject
// Disabled as unknown (PROTOCOL.md §3.4).
const (
	StatusUnassigned Status = "unassigned"
	StatusAssigning  Status = "assigning"
	StatusAssigned   Status = "assigned"
	StatusFailed     Status = "failed"
	StatusDisabled   Status = "disabled"
)

// Known reports whether s is one of the DPS statuses.
func (s Status) Known() bool {
	switch s {
	case StatusUnassigned, StatusAssigning, StatusAssigned, StatusFailed, StatusDisabled:
		return true
	}
	return false
}

// Final reports whether a device stops polling on s.
func (s Status) Final() bool {
	return s == StatusAssigned || s == StatusFailed || s == StatusDisabled
}

// Substatus values of an assigned registration.
const (
	SubstatusInitialAssignment                = "initialAssignment"
	SubstatusDeviceDataMigrated               = "deviceDataMigrated"
	SubstatusDeviceDataReset                  = "deviceDataReset"
	SubstatusReprovisionedToInitialAssignment = "reprovisionedToInitialAssignment"
)

// TPMAttestation is the "tpm" object of a register request: base64 of the
// marshalled TPM2B_PUBLIC of the endorsement key and of the storage root
// key. Sent by TPM devices.
//
// The other fields are dpsbroker's extensions of TPM attestation over MQTT
// (Azure has none of them):
//   - SASToken answers the 401 challenge in the second register request
//     on the same connection: the SAS token signed with the imported key
//     ("SharedAccessSignature sr=...").
//   - EndorsementKeyCertificate is base64 DER of the EK certificate, and
//     EndorsementKeyCertificateChain the base64 DER of intermediates up to
//     the manufacturer CA, for TPM enrollment groups.
type TPMAttestation struct {
	EndorsementKey                 string   `json:"endorsementKey"`
	StorageRootKey                 string   `json:"storageRootKey,omitempty"`
	SASToken                       string   `json:"sasToken,omitempty"`
	EndorsementKeyCertificate      string   `json:"endorsementKeyCertificate,omitempty"`
	EndorsementKeyCertificateChain []string `json:"endorsementKeyCertificateChain,omitempty"`
}

// Limits of the TPM extension fields. A SAS token is capped like the
// symmetric-key ones (provisioning/sas.MaxTokenLen); EK certificates are
// 1-2 KB, and manufacturer chains are two or three certificates deep.
const (
	MaxSASTokenLen       = 2048
	MaxEKCertificateLen  = 8192 // base64 characters
	MaxEKCertificateDeep = 4    // intermediates in EndorsementKeyCertificateChain
)

// RegisterRequest is the body of a register request (DPS
// DeviceRegistration). Sent by the device.
//
// The authoritative registration ID is the CONNECT username's;
// RegistrationID is empty when the device left it out (C# v1, embedded C).
// Payload is the device's custom data exactly as sent: nil when absent or
// null, and a JSON string is kept as a string (Java sends its payload that
// way).
type RegisterRequest struct {
	RegistrationID string          `json:"registrationId,omitempty"`
	TPM            *TPMAttestation `json:"tpm,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"`
}

// PayloadError reports a request body the broker refuses. Code is the DPS
// error code to answer with (ErrorCodeInvalidJSON or
// ErrorCodePayloadTooLarge).
type PayloadError struct {
	Code int
	// Field is the JSON path of the offending field, if known.
	Field string
	// Offset is the byte offset of a syntax error, or -1.
	Offset int64
	Msg    string
}

func (e *PayloadError) Error() string {
	s := "request body: "
	if e.Field != "" {
		s += e.Field + ": "
	}
	s += e.Msg
	if e.Offset >= 0 {
		s += " (at byte " + strconv.FormatInt(e.Offset, 10) + ")"
	}
	return s
}

// ErrorCode is the DPS error code a device gets for this error.
func (e *PayloadError) ErrorCode() int { return e.Code }

func payloadErr(field, msg string) *PayloadError {
	return &PayloadError{Code: ErrorCodeInvalidJSON, Field: field, Offset: -1, Msg: msg}
}

// DecodeRegisterRequest decodes a register request body. An empty or
// all-whitespace body, and a bare null, are a request with no fields (the
// embedded C sample and C# v1 send nothing). Unknown fields are ignored.
// Anything that is not a JSON object, has a field of the wrong type, or
// carries a tpm object whose keys are not base64 gets a *PayloadError.
func DecodeRegisterRequest(body []byte) (*RegisterRequest, error) {
	if len(body) > MaxRequestBody {
		return nil, &PayloadError{Code: ErrorCodePayloadTooLarge, Offset: -1,
			Msg: "larger than " + strconv.Itoa(MaxRequestBody) + " bytes"}
	}
	trimmed := bytes.TrimSpace(body)
	req := &RegisterRequest{}
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return req, nil
	}
	if trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return nil, syntaxErr(trimmed)
		}
		return nil, payloadErr("", "not a JSON object")
	}
	if err := json.Unmarshal(trimmed, req); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, &PayloadError{Code: ErrorCodeInvalidJSON, Offset: se.Offset, Msg: "invalid JSON: " + se.Error()}
		case errors.As(err, &te):
			return nil, payloadErr(te.Field, "is a JSON "+te.Value+", want "+jsonKind(te.Type.Kind().String()))
		default:
			return nil, payloadErr("", "invalid JSON: "+err.Error())
		}
	}
	if bytes.Equal(req.Payload, []byte("null")) {
		req.Payload = nil
	}
	if req.TPM != nil {
		if req.TPM.EndorsementKey == "" {
			return nil, payloadErr("tpm.endorsementKey", "missing")
		}
		if !isBase64(req.TPM.EndorsementKey) {
			return nil, payloadErr("tpm.endorsementKey", "not base64")
		}
		if req.TPM.StorageRootKey != "" && !isBase64(req.TPM.StorageRootKey) {
			return nil, payloadErr("tpm.storageRootKey", "not base64")
		}
		if len(req.TPM.SASToken) > MaxSASTokenLen {
			return nil, payloadErr("tpm.sasToken", "longer than "+strconv.Itoa(MaxSASTokenLen)+" bytes")
		}
		if err := checkEKCertificates(req.TPM); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// checkEKCertificates bounds the EK certificate fields; their content is
// the attestation's business.
func checkEKCertificates(t *TPMAttestation) *PayloadError {
	if c := t.EndorsementKeyCertificate; c != "" && (len(c) > MaxEKCertificateLen || !isBase64(c)) {
		return payloadErr("tpm.endorsementKeyCertificate", "not base64 of at most "+strconv.Itoa(MaxEKCertificateLen)+" characters")
	}
	if len(t.EndorsementKeyCertificateChain) > 0 && t.EndorsementKeyCertificate == "" {
		return payloadErr("tpm.endorsementKeyCertificateChain", "sent without endorsementKeyCertificate")
	}
	if len(t.EndorsementKeyCertificateChain) > MaxEKCertificateDeep {
		return payloadErr("tpm.endorsementKeyCertificateChain", "more than "+strconv.Itoa(MaxEKCertificateDeep)+" certificates")
	}
	for i, c := range t.EndorsementKeyCertificateChain {
		if c == "" || len(c) > MaxEKCertificateLen || !isBase64(c) {
			return payloadErr("tpm.endorsementKeyCertificateChain["+strconv.Itoa(i)+"]", "not base64 of at most "+strconv.Itoa(MaxEKCertificateLen)+" characters")
		}
	}
	return nil
}

func syntaxErr(b []byte) *PayloadError {
	var v any
	err := json.Unmarshal(b, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &PayloadError{Code: ErrorCodeInvalidJSON, Offset: se.Offset, Msg: "invalid JSON: " + se.Error()}
	}
	return payloadErr("", "invalid JSON")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	case "bool":
		return "boolean"
	default:
		return goKind
	}
}

func isBase64(s string) bool {
	_, err := base64.StdEncoding.DecodeString(s)
	return err == nil
}

// RegistrationOperationStatus is the body of 202 and 200 responses. Sent
// by the broker. OperationID is always set when Status is assigning (C and
// embedded C require it); RegistrationState is set on 200.
type RegistrationOperationStatus struct {
	OperationID       string                    `json:"operationId,omitempty"`
	Status            Status                    `json:"status"`
	RegistrationState *DeviceRegistrationResult `json:"registrationState,omitempty"`
}

// DeviceRegistrationResult is the registration outcome (PROTOCOL.md §3.2).
// Sent by the broker on 200. AssignedHub and DeviceID go together: C wants
// both when assigned, embedded C both or neither. Payload must be a JSON
// object or absent (embedded C accepts nothing else).
type DeviceRegistrationResult struct {
	RegistrationID         string                          `json:"registrationId"`
	CreatedDateTimeUTC     Time                            `json:"createdDateTimeUtc,omitzero"`
	AssignedHub            string                          `json:"assignedHub,omitempty"`
	DeviceID               string                          `json:"deviceId,omitempty"`
	Status                 Status                          `json:"status"`
	Substatus              string                          `json:"substatus,omitempty"`
	ErrorCode              int                             `json:"errorCode,omitempty"`
	ErrorMessage           string                          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC Time                            `json:"lastUpdatedDateTimeUtc,omitzero"`
	ETag                   string                          `json:"etag,omitempty"`
	Payload                json.RawMessage                 `json:"payload,omitempty"`
	X509                   *X509RegistrationResult         `json:"x509,omitempty"`
	TPM                    *TPMRegistrationResult          `json:"tpm,omitempty"`
	SymmetricKey           *SymmetricKeyRegistrationResult `json:"symmetricKey,omitempty"`
}

// X509RegistrationResult tells an X.509 device which certificate admitted
// it. The field is "certificateInfo", as in the swagger and SDK models.
type X509RegistrationResult struct {
	CertificateInfo        *X509CertificateInfo `json:"certificateInfo,omitempty"`
	EnrollmentGroupID      string               `json:"enrollmentGroupId,omitempty"`
	SigningCertificateInfo *X509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

// TPMRegistrationResult carries the key blob a TPM device imports for
// IoT Hub (same layout as TPMChallenge.AuthenticationKey). The C SDK
// requires it when a TPM device is assigned.
type TPMRegistrationResult struct {
	AuthenticationKey string `json:"authenticationKey"`
}

// SymmetricKeyRegistrationResult names the group of a symmetric-key device.
type SymmetricKeyRegistrationResult struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

// TPMKeyName is the keyName of every TPM challenge.
const TPMKeyName = "registration"

// TPMChallenge is the 401 body answering a TPM register request (our
// extension over MQTT, the Azure HTTP/AMQP flow): the base64 blob of
// PROTOCOL.md §4.4 that only the TPM holding the EK and SRK can import.
// Sent by the broker. It has no "status" field; the C SDK needs both
// fields.
type TPMChallenge struct {
	AuthenticationKey string `json:"authenticationKey"`
	KeyName           string `json:"keyName"`
}
