package admin

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// decodeJSON reads exactly one JSON value from the body into v. allowEmpty
// accepts an empty body (v is left unchanged), as query requests may have.
func decodeJSON(r *http.Request, v any, allowEmpty bool) error {
	if r.Body == nil {
		if allowEmpty {
			return nil
		}
		return badRequest(ErrorCodeInvalidBody, "request body is empty; a JSON object is required")
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) && allowEmpty {
			return nil
		}
		return bodyError(err)
	}
	// One value only: trailing data is a client bug worth reporting.
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return bodyError(err)
	default:
		return badRequest(ErrorCodeInvalidBody, "request body has data after the JSON value")
	}
}

// decodeEntity reads the body and decodes it with one of the domain's
// strict decoders, which report unknown fields, wrong types and malformed
// JSON as a *provisioning.ValidationError. The body is read here first so
// that a body over the limit answers 413.
func decodeEntity[T any](r *http.Request, decode func(io.Reader) (*T, error)) (*T, error) {
	var b []byte
	if r.Body != nil {
		var err error
		if b, err = io.ReadAll(r.Body); err != nil {
			return nil, bodyError(err)
		}
	}
	return decode(bytes.NewReader(b))
}

// bodyError explains a decoding failure without quoting the input (it may
// hold key material).
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.Is(err, io.EOF):
		return badRequest(ErrorCodeInvalidBody, "request body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest(ErrorCodeInvalidBody, "request body is truncated JSON")
	case errors.As(err, &se):
		return badRequest(ErrorCodeInvalidBody, "request body is not valid JSON (at byte offset %d)", se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return badRequest(ErrorCodeInvalidBody, "field %s: expected %s, got JSON %s", field, te.Type, te.Value)
	default:
		return badRequest(ErrorCodeInvalidBody, "request body could not be decoded: %s", trimForMessage(err.Error()))
	}
}

// trimForMessage bounds a decoder message that might otherwise echo a long
// piece of input.
func trimForMessage(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// Paging of query requests (DPS headers).
const (
	headerMaxItemCount = "x-ms-max-item-count"
	headerContinuation = "x-ms-continuation"
	headerItemType     = "x-ms-item-type"
	defaultPageSize    = 100
	maxPageSize        = 1000
)

// pageSize reads x-ms-max-item-count.
func pageSize(r *http.Request) (int, error) {
	v := r.Header.Get(headerMaxItemCount)
	if v == "" {
		return defaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, badRequest(ErrorCodeBadQuery, "%s must be a positive integer", headerMaxItemCount)
	}
	return min(n, maxPageSize), nil
}

// queryRequest is the DPS QuerySpecification.
type queryRequest struct {
	Query string `json:"query"`
}

// checkQuery accepts the queries this service answers: every entry. DPS
// accepts a SQL dialect; anything but "*" (or "SELECT * FROM <collection>")
// is refused rather than silently answered with everything.
func checkQuery(r *http.Request, collection string) error {
	var q queryRequest
	if err := decodeJSON(r, &q, true); err != nil {
		return err
	}
	if isSelectAll(q.Query, collection) {
		return nil
	}
	return badRequest(ErrorCodeBadQuery, "unsupported query %s; only \"*\" (or \"SELECT * FROM %s\") is supported", strconv.Quote(trimForMessage(q.Query)), collection)
}

func isSelectAll(q, collection string) bool {
	fields := strings.Fields(q)
	switch len(fields) {
	case 0:
		return true
	case 1:
		return fields[0] == "*"
	case 4:
		return strings.EqualFold(fields[0], "select") && fields[1] == "*" && strings.EqualFold(fields[2], "from") && strings.EqualFold(fields[3], collection)
	}
	return false
}

// continuation formats and parses x-ms-continuation. The token is the store
// cursor, base64url-encoded so that any cursor is a valid header value and
// clients treat it as opaque.
func encodeContinuation(cursor string) string {
	if cursor == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(cursor))
}

func decodeContinuation(r *http.Request) (string, error) {
	v := r.Header.Get(headerContinuation)
	if v == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) == 0 {
		return "", badRequest(ErrorCodeBadQuery, "%s is not a continuation token of this service", headerContinuation)
	}
	return string(b), nil
}
