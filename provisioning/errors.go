package provisioning

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of the stores and the service. Callers branch on them with
// errors.Is; stores wrap them with context.
var (
	// ErrNotFound: the entry, record or operation does not exist.
	ErrNotFound = errors.New("not found")
	// ErrPreconditionFailed: an If-Match etag did not match the stored one.
	ErrPreconditionFailed = errors.New("etag mismatch")
	// ErrStoreUnavailable: the backing store could not be reached. The
	// decision fails closed on it.
	ErrStoreUnavailable = errors.New("store unavailable")
)

// FieldError is one invalid field of a request, named by its JSON path.
type FieldError struct {
	Field   string
	Message string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Message }

// ValidationError lists every problem found in an enrollment, group or
// record, so that a client can fix them all at once. It answers 400.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Error()
	}
	return "invalid: " + strings.Join(parts, "; ")
}

// add records a problem; the receiver collects them in order.
func (e *ValidationError) add(field, format string, args ...any) {
	e.Problems = append(e.Problems, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// err returns nil when nothing was recorded, so that callers can write
// "return v.err()".
func (e *ValidationError) err() error {
	if len(e.Problems) == 0 {
		return nil
	}
	return e
}

// IsValidation reports whether err is (or wraps) a ValidationError.
func IsValidation(err error) bool {
	var v *ValidationError
	return errors.As(err, &v)
}
