package wire

import (
	"strconv"
	"time"
)

// DPS error codes: the HTTP status times 1000 plus a suffix, because the
// embedded C SDK derives the status as errorCode/1000 (PROTOCOL.md §3.3).
// Codes marked "Azure" are the ones Azure DPS is known to send; the others
// are dpsbroker's own, chosen so that a device owner can tell causes apart.
//
// Every permanent error is below 429: the SDKs retry 429 and 5xx forever.
const (
	// ErrorCodeBadTopic (ours): the request topic is malformed (unknown
	// path, missing or bad $rid or operationId). See TopicError.
	ErrorCodeBadTopic = 400001
	// ErrorCodeRegistrationIDMismatch (ours): the body's registrationId
	// differs from the CONNECT username's.
	ErrorCodeRegistrationIDMismatch = 400002
	// ErrorCodeBadRequest (ours): the request is well-formed but cannot be
	// served in this session (for example a TPM request from an X.509
	// device).
	ErrorCodeBadRequest = 400003
	// ErrorCodeInvalidJSON (ours): the body is not a JSON object of the
	// register shape. See PayloadError.
	ErrorCodeInvalidJSON = 400004
	// ErrorCodePayloadTooLarge (ours): the body exceeds MaxRequestBody.
	ErrorCodePayloadTooLarge = 400005
	// ErrorCodeCustomAllocationFailed (Azure): the allocation webhook
	// answered with a non-2xx status.
	ErrorCodeCustomAllocationFailed = 400207
	// ErrorCodeNoHubAssigned (Azure): no hub could be assigned.
	ErrorCodeNoHubAssigned = 400208
	// ErrorCodeHubUnauthorized (Azure): the hub refused the device.
	ErrorCodeHubUnauthorized = 400209
	// ErrorCodeUnauthorized (Azure): generic authentication failure, e.g. a
	// SAS token that does not verify.
	ErrorCodeUnauthorized = 401000
	// ErrorCodeInvalidCertificate (Azure): the X.509 chain or enrollment
	// does not admit the device ("Invalid certificate").
	ErrorCodeInvalidCertificate = 401002
	// ErrorCodeEnrollmentNotFound (Azure service API).
	ErrorCodeEnrollmentNotFound = 404201
	// ErrorCodeRegistrationNotFound (Azure service API).
	ErrorCodeRegistrationNotFound = 404202
	// ErrorCodeOperationNotFound (ours): the polled operationId is unknown,
	// expired, or belongs to another device.
	ErrorCodeOperationNotFound = 404203
	// ErrorCodePreconditionFailed (ours, after IoT Hub's IH412001): an
	// If-Match etag did not match.
	ErrorCodePreconditionFailed = 412001
	// ErrorCodePollingTooFast (ours): more status polls than the limit
	// (Azure: 5 per 10 s per device). Sent with retry-after.
	ErrorCodePollingTooFast = 429001
	// ErrorCodeThrottled (ours): too many registrations on this service.
	// Sent with retry-after.
	ErrorCodeThrottled = 429002
	// ErrorCodeInternal (ours): a server fault; devices retry.
	ErrorCodeInternal = 500000
	// ErrorCodeStoreUnavailable (ours): the store could not be reached;
	// devices retry.
	ErrorCodeStoreUnavailable = 503000
)

// HTTPStatus is the topic status of a DPS error code (code / 1000).
func HTTPStatus(errorCode int) int { return errorCode / 1000 }

// ErrorDetails is the error body of every non-2xx response except the TPM
// challenge (DPS ProvisioningServiceErrorDetails). Sent by the broker.
type ErrorDetails struct {
	ErrorCode    int               `json:"errorCode"`
	TrackingID   string            `json:"trackingId"`
	Message      string            `json:"message"`
	TimestampUTC Time              `json:"timestampUtc"`
	Info         map[string]string `json:"info,omitempty"`
}

// NewErrorDetails builds an error body. trackingID correlates the device's
// report with the broker's logs; message must not carry secrets.
func NewErrorDetails(errorCode int, trackingID, message string, now time.Time) *ErrorDetails {
	return &ErrorDetails{
		ErrorCode:    errorCode,
		TrackingID:   trackingID,
		Message:      message,
		TimestampUTC: NewTime(now),
	}
}

// HTTPStatus is the status to put in the response topic.
func (e *ErrorDetails) HTTPStatus() int { return HTTPStatus(e.ErrorCode) }

// Error lets a device client return the body as an error.
func (e *ErrorDetails) Error() string {
	return "dps error " + strconv.Itoa(e.ErrorCode) + ": " + e.Message
}
