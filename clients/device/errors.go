package device

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// ErrConnectionLost reports that the broker closed the connection, or the
// network failed, while the client was waiting for it.
var ErrConnectionLost = errors.New("device: connection lost")

// Error is a DPS error response: a status other than 200 and 202 on the
// response topic, with the error body the broker sent. Permanent errors
// (below 429) are returned at once; 429 and 5xx are returned only after
// Config.MaxAttempts tries.
type Error struct {
	// Status is the HTTP-style status of the response topic.
	Status int
	// Details is the decoded error body. Its ErrorCode is zero when the
	// body was not a DPS error object (for example a TPM challenge).
	Details wire.ErrorDetails
	// RetryAfter is the response's retry-after hint, zero when absent.
	RetryAfter time.Duration
}

// Error names the DPS error code first, because that is what a device
// owner looks up, then the message and the tracking ID that finds the
// broker's log line.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("dps: status ")
	b.WriteString(strconv.Itoa(e.Status))
	if e.Details.ErrorCode != 0 {
		b.WriteString(", error ")
		b.WriteString(strconv.Itoa(e.Details.ErrorCode))
	}
	if e.Details.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Details.Message)
	}
	if e.Details.TrackingID != "" {
		b.WriteString(" (tracking ID ")
		b.WriteString(e.Details.TrackingID)
		b.WriteString(")")
	}
	return b.String()
}

// ErrorCode is the DPS error code: the body's, or Status x 1000 when the
// body carried none.
func (e *Error) ErrorCode() int {
	if e.Details.ErrorCode != 0 {
		return e.Details.ErrorCode
	}
	return e.Status * 1000
}

// Temporary reports whether the broker asked the device to try again
// later (429 and 5xx), as the DPS SDKs decide.
func (e *Error) Temporary() bool { return transient(e.Status) }

func transient(status int) bool { return status == 429 || status >= 500 }

// RegistrationError is a final registration status other than assigned:
// the broker answered 200 with status failed or disabled.
type RegistrationError struct {
	// Status is wire.StatusFailed or wire.StatusDisabled.
	Status wire.Status
	// ErrorCode and Message come from the registration state, when the
	// broker filled them in.
	ErrorCode int
	Message   string
	// OperationID is the operation that ended this way, if known.
	OperationID string
	// State is the registration state as sent, nil when absent.
	State *wire.DeviceRegistrationResult
}

// Error reads like the Error of a response error, so that users see the
// same shape whichever way the broker refused.
func (e *RegistrationError) Error() string {
	s := "dps: registration " + string(e.Status)
	if e.ErrorCode != 0 {
		s += ", error " + strconv.Itoa(e.ErrorCode)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// ConnectError is a CONNACK refusal. dpsbroker refuses X.509 devices at
// CONNECT with 0x87 "not authorized" and a reason string that starts with
// the DPS error code, such as "401002 enrollment group disabled".
type ConnectError struct {
	// ReasonCode is the MQTT v5 CONNACK reason code (>= 0x80).
	ReasonCode byte
	// Reason is the CONNACK reason string, empty when the broker sent none.
	Reason string
}

// Error gives the reason code with its MQTT name and the broker's reason.
func (e *ConnectError) Error() string {
	s := fmt.Sprintf("connection refused: 0x%02x %s", e.ReasonCode, connackName(e.ReasonCode))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// ErrorCode is the DPS error code at the start of the reason string, or 0
// when the reason does not start with one.
func (e *ConnectError) ErrorCode() int {
	digits, _, _ := strings.Cut(e.Reason, " ")
	if len(digits) != 6 {
		return 0
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 100000 {
		return 0
	}
	return n
}

// Temporary reports whether the refusal says the broker is overloaded or
// unavailable rather than that the device is not admitted.
func (e *ConnectError) Temporary() bool {
	switch e.ReasonCode {
	case 0x88, 0x89, 0x97, 0x9f: // server unavailable, busy, quota exceeded, rate exceeded
		return true
	}
	return false
}

// connackName is the MQTT v5 name of a CONNACK reason code (§3.2.2.2).
func connackName(code byte) string {
	switch code {
	case 0x80:
		return "unspecified error"
	case 0x81:
		return "malformed packet"
	case 0x82:
		return "protocol error"
	case 0x83:
		return "implementation specific error"
	case 0x84:
		return "unsupported protocol version"
	case 0x85:
		return "client identifier not valid"
	case 0x86:
		return "bad user name or password"
	case 0x87:
		return "not authorized"
	case 0x88:
		return "server unavailable"
	case 0x89:
		return "server busy"
	case 0x8a:
		return "banned"
	case 0x8c:
		return "bad authentication method"
	case 0x90:
		return "topic name invalid"
	case 0x95:
		return "packet too large"
	case 0x97:
		return "quota exceeded"
	case 0x99:
		return "payload format invalid"
	case 0x9a:
		return "retain not supported"
	case 0x9b:
		return "QoS not supported"
	case 0x9c:
		return "use another server"
	case 0x9d:
		return "server moved"
	case 0x9f:
		return "connection rate exceeded"
	}
	return "refused"
}

// ErrorCode returns the DPS error code carried by err (a *Error,
// *RegistrationError or *ConnectError anywhere in its chain), or 0.
func ErrorCode(err error) int {
	var coder interface{ ErrorCode() int }
	if errors.As(err, &coder) {
		return coder.ErrorCode()
	}
	var re *RegistrationError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return 0
}
