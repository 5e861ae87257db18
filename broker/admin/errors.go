package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// Error codes of the admin API: the HTTP status times 1000 plus a suffix,
// as in every DPS error body. The 404 codes of enrollments and registrations
// are Azure's; the others are dpsbroker's own.
const (
	// ErrorCodeInvalidBody: the body is not the expected JSON.
	ErrorCodeInvalidBody = 400101
	// ErrorCodeValidation: the entity has invalid fields; the message lists
	// them all and info maps each field to its problem.
	ErrorCodeValidation = 400102
	// ErrorCodeIDMismatch: the ID in the body differs from the path's.
	ErrorCodeIDMismatch = 400103
	// ErrorCodeBadQuery: the query, page size or continuation is invalid.
	ErrorCodeBadQuery = 400104
	// ErrorCodeBadBulk: the bulk request has a bad mode or item count.
	ErrorCodeBadBulk = 400105
	// ErrorCodeVerificationFailed: the proof-of-possession certificate does
	// not carry the verification code or is not signed by the CA.
	ErrorCodeVerificationFailed = 400106
	// ErrorCodeNoVerificationCode: verify was called before
	// generateVerificationCode.
	ErrorCodeNoVerificationCode = 400107
	// ErrorCodeUnauthorized: missing or wrong bearer token.
	ErrorCodeUnauthorized = wire.ErrorCodeUnauthorized
	// ErrorCodeRouteNotFound: no such resource path.
	ErrorCodeRouteNotFound = 404000
	// ErrorCodeEnrollmentNotFound (Azure).
	ErrorCodeEnrollmentNotFound = wire.ErrorCodeEnrollmentNotFound
	// ErrorCodeRegistrationNotFound (Azure).
	ErrorCodeRegistrationNotFound = wire.ErrorCodeRegistrationNotFound
	// ErrorCodeEnrollmentGroupNotFound: no group with that ID.
	ErrorCodeEnrollmentGroupNotFound = 404204
	// ErrorCodeCACertificateNotFound: no CA certificate with that name.
	ErrorCodeCACertificateNotFound = 404205
	// ErrorCodeMethodNotAllowed: the path exists, the method does not.
	ErrorCodeMethodNotAllowed = 405000
	// ErrorCodeConflict: a bulk create met an existing entry.
	ErrorCodeConflict = 409001
	// ErrorCodePreconditionFailed: If-Match did not match the stored etag.
	ErrorCodePreconditionFailed = wire.ErrorCodePreconditionFailed
	// ErrorCodeBodyTooLarge: the body exceeds Options.MaxBodyBytes.
	ErrorCodeBodyTooLarge = 413000
	// ErrorCodeInternal: a server fault; the log has the cause.
	ErrorCodeInternal = wire.ErrorCodeInternal
	// ErrorCodeStoreUnavailable: the store could not be reached.
	ErrorCodeStoreUnavailable = wire.ErrorCodeStoreUnavailable
)

// apiError is an error with the response it deserves.
type apiError struct {
	status int
	code   int
	msg    string
	info   map[string]string
	cause  error // logged for 5xx, never sent
}

func (e *apiError) Error() string { return e.msg }

func tooLarge(limit int64) *apiError {
	return &apiError{status: http.StatusRequestEntityTooLarge, code: ErrorCodeBodyTooLarge,
		msg: fmt.Sprintf("request body exceeds the limit of %d bytes", limit)}
}

func badRequest(code int, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, msg: fmt.Sprintf(format, args...)}
}

// kind describes an entity type for error messages and 404 codes.
type kind struct {
	name     string
	notFound int
}

var (
	kindEnrollment   = kind{"enrollment", ErrorCodeEnrollmentNotFound}
	kindGroup        = kind{"enrollment group", ErrorCodeEnrollmentGroupNotFound}
	kindRegistration = kind{"registration", ErrorCodeRegistrationNotFound}
	kindCA           = kind{"CA certificate", ErrorCodeCACertificateNotFound}
)

// toAPIError classifies err: the store's sentinels and validation errors
// become client errors, anything else an internal one.
func toAPIError(err error, k kind, id string) *apiError {
	var ae *apiError
	var ve *provisioning.ValidationError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ve):
		return validationError(ve)
	case errors.Is(err, provisioning.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: k.notFound, msg: fmt.Sprintf("%s %q not found", k.name, id)}
	case errors.Is(err, provisioning.ErrPreconditionFailed):
		return &apiError{status: http.StatusPreconditionFailed, code: ErrorCodePreconditionFailed,
			msg: fmt.Sprintf("%s %q: If-Match etag does not match the stored one (it changed or does not exist); read it again", k.name, id)}
	case errors.Is(err, provisioning.ErrStoreUnavailable):
		return &apiError{status: http.StatusServiceUnavailable, code: ErrorCodeStoreUnavailable, msg: "store unavailable, try again", cause: err}
	default:
		return &apiError{status: http.StatusInternalServerError, code: ErrorCodeInternal, msg: "internal error", cause: err}
	}
}

// validationError lists every problem in the message and maps each field to
// its problems in info. Problems of the body as a whole (malformed JSON,
// empty) have no field and answer ErrorCodeInvalidBody.
func validationError(ve *provisioning.ValidationError) *apiError {
	info := make(map[string]string, len(ve.Problems))
	parts := make([]string, 0, len(ve.Problems))
	for _, p := range ve.Problems {
		if p.Field == "" {
			parts = append(parts, p.Message)
			continue
		}
		parts = append(parts, p.Error())
		if prev, ok := info[p.Field]; ok {
			info[p.Field] = prev + "; " + p.Message
		} else {
			info[p.Field] = p.Message
		}
	}
	if len(info) == 0 {
		return &apiError{status: http.StatusBadRequest, code: ErrorCodeInvalidBody, msg: strings.Join(parts, "; ")}
	}
	return &apiError{status: http.StatusBadRequest, code: ErrorCodeValidation, msg: "invalid: " + strings.Join(parts, "; "), info: info}
}

// writeError sends err as a DPS error body and keeps the cause of a server
// fault for the request log.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err, kind{"entry", ErrorCodeRouteNotFound}, "")
	ri := info(r)
	if ae.cause != nil {
		ri.cause = ae.cause
	}
	body := wire.NewErrorDetails(ae.code, ri.trackingID, ae.msg, h.now())
	body.Info = ae.info
	writeJSON(w, ae.status, body, "")
}

// writeJSON sends v with status and, when etag is set, an ETag header.
func writeJSON(w http.ResponseWriter, status int, v any, etag string) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a bug gets here (an unmarshalable value); say so plainly.
		status = http.StatusInternalServerError
		b = []byte(`{"errorCode":500000,"message":"internal error: response encoding failed"}`)
		etag = ""
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-store")
	if etag != "" {
		hd.Set("ETag", quoteETag(etag))
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// quoteETag makes an HTTP entity tag of a stored etag.
func quoteETag(etag string) string {
	if strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, `W/"`) {
		return etag
	}
	return `"` + etag + `"`
}

// ifMatch returns the If-Match header as the store compares it: without the
// quotes of an HTTP entity tag, so that clients may send either the ETag
// header or the body's etag field.
func ifMatch(r *http.Request) string {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	v = strings.TrimPrefix(v, "W/")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	return v
}
