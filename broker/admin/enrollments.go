package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func (h *handler) getEnrollment(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("registrationId")
	e, err := h.store.GetEnrollment(r.Context(), id)
	if err != nil {
		return toAPIError(err, kindEnrollment, id)
	}
	e.FillInfo()
	// DPS shows the registration state on an enrollment read. It is a
	// convenience: failing to read it does not fail the request.
	if reg, err := h.store.GetRegistration(r.Context(), id); err == nil {
		e.RegistrationState = reg
	}
	writeJSON(w, http.StatusOK, e, e.ETag)
	return nil
}

// enrollmentAttestation returns the attestation with its keys (DPS
// attestationmechanism).
func (h *handler) enrollmentAttestation(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("registrationId")
	e, err := h.store.GetEnrollment(r.Context(), id)
	if err != nil {
		return toAPIError(err, kindEnrollment, id)
	}
	e.FillInfo()
	writeJSON(w, http.StatusOK, e.Attestation, "")
	return nil
}

func (h *handler) putEnrollment(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("registrationId")
	e, err := decodeEntity(r, provisioning.DecodeEnrollment)
	if err != nil {
		return toAPIError(err, kindEnrollment, id)
	}
	if !strings.EqualFold(e.RegistrationID, id) {
		return badRequest(ErrorCodeIDMismatch, "registrationId %q in the body differs from %q in the path", e.RegistrationID, id)
	}
	out, err := h.writeEnrollment(r.Context(), e, ifMatch(r))
	if err != nil {
		return toAPIError(err, kindEnrollment, id)
	}
	writeJSON(w, http.StatusOK, out, out.ETag)
	return nil
}

// writeEnrollment prepares, validates and stores e, and returns the stored
// entry as clients see it.
func (h *handler) writeEnrollment(ctx context.Context, e *provisioning.IndividualEnrollment, etag string) (*provisioning.IndividualEnrollment, error) {
	// Read-only fields are the service's to set.
	e.RegistrationState = nil
	e.ETag = ""
	e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC = nil, nil
	clearInfo(e.Attestation.X509)
	if err := e.Attestation.GenerateMissingKeys(h.rand); err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	out, err := h.store.PutEnrollment(ctx, e, etag)
	if err != nil {
		return nil, err
	}
	out.FillInfo()
	return out, nil
}

func (h *handler) deleteEnrollment(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("registrationId")
	if err := h.store.DeleteEnrollment(r.Context(), id, ifMatch(r)); err != nil {
		return toAPIError(err, kindEnrollment, id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) queryEnrollments(w http.ResponseWriter, r *http.Request) error {
	if err := checkQuery(r, "enrollments"); err != nil {
		return err
	}
	limit, cursor, err := paging(r)
	if err != nil {
		return err
	}
	page, next, err := h.store.ListEnrollments(r.Context(), cursor, limit)
	if err != nil {
		return toAPIError(err, kindEnrollment, "")
	}
	for _, e := range page {
		e.FillInfo()
	}
	writePage(w, "Enrollment", nonNil(page), next)
	return nil
}

// paging reads the page size and continuation of a query.
func paging(r *http.Request) (limit int, cursor string, err error) {
	if limit, err = pageSize(r); err != nil {
		return 0, "", err
	}
	if cursor, err = decodeContinuation(r); err != nil {
		return 0, "", err
	}
	return limit, cursor, nil
}

// writePage sends one page of a query with the DPS headers.
func writePage(w http.ResponseWriter, itemType string, items any, next string) {
	w.Header().Set(headerItemType, itemType)
	if next != "" {
		w.Header().Set(headerContinuation, encodeContinuation(next))
	}
	writeJSON(w, http.StatusOK, items, "")
}

// nonNil makes an empty page marshal as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// clearInfo drops client-sent certificate descriptions: the service fills
// them in from the certificates on read.
func clearInfo(x *provisioning.X509Attestation) {
	if x == nil {
		return
	}
	for _, cs := range []*provisioning.X509Certificates{x.ClientCertificates, x.SigningCertificates} {
		if cs == nil {
			continue
		}
		for _, c := range []*provisioning.X509CertificateWithInfo{cs.Primary, cs.Secondary} {
			if c != nil {
				c.Info = nil
			}
		}
	}
}

// Bulk operations (DPS BulkEnrollmentOperation).

// MaxBulkItems is the DPS limit on items in one bulk request.
const MaxBulkItems = 10

// Bulk modes.
const (
	bulkCreate            = "create"
	bulkUpdate            = "update"
	bulkUpdateIfMatchETag = "updateIfMatchETag"
	bulkDelete            = "delete"
)

// bulkEnrollmentRequest keeps items raw: each is decoded strictly on its
// own, so that one bad item fails alone.
type bulkEnrollmentRequest struct {
	Mode        string            `json:"mode"`
	Enrollments []json.RawMessage `json:"enrollments"`
}

type bulkEnrollmentResult struct {
	IsSuccessful bool                  `json:"isSuccessful"`
	Errors       []bulkEnrollmentError `json:"errors"`
}

type bulkEnrollmentError struct {
	RegistrationID string `json:"registrationId"`
	ErrorCode      int    `json:"errorCode"`
	ErrorStatus    string `json:"errorStatus"`
}

// checkBulk validates what applies to the request as a whole.
func checkBulk(mode string, n int, what string) error {
	switch mode {
	case bulkCreate, bulkUpdate, bulkUpdateIfMatchETag, bulkDelete:
	case "":
		return badRequest(ErrorCodeBadBulk, "mode is required (create, update, updateIfMatchETag or delete)")
	default:
		return badRequest(ErrorCodeBadBulk, "unknown mode %q; allowed are create, update, updateIfMatchETag and delete", mode)
	}
	switch {
	case n == 0:
		return badRequest(ErrorCodeBadBulk, "%s is empty", what)
	case n > MaxBulkItems:
		return badRequest(ErrorCodeBadBulk, "%s has %d items; at most %d are allowed per request", what, n, MaxBulkItems)
	}
	return nil
}

// bulkItem runs one item of a bulk request: get (for create), put or
// delete. Items are independent, as in DPS: one failing does not undo the
// others.
func bulkItem(k kind, mode, id, etag string, seen map[string]bool,
	get func() error, put func(ifMatch string) error, del func(ifMatch string) error) *apiError {
	key := provisioning.RegistrationKey(id)
	if id != "" && seen[key] {
		return badRequest(ErrorCodeBadBulk, "%s %q appears more than once in this request", k.name, id)
	}
	seen[key] = true
	if id == "" {
		return badRequest(ErrorCodeValidation, "the %s ID is required", k.name)
	}
	var err error
	switch mode {
	case bulkCreate:
		switch gerr := get(); {
		case gerr == nil:
			return &apiError{status: http.StatusConflict, code: ErrorCodeConflict, msg: fmt.Sprintf("%s %q already exists", k.name, id)}
		case !errors.Is(gerr, provisioning.ErrNotFound):
			err = gerr
		default:
			err = put("")
		}
	case bulkUpdate:
		err = put("")
	case bulkUpdateIfMatchETag:
		if etag == "" {
			return badRequest(ErrorCodeValidation, "etag is required in mode %s", mode)
		}
		err = put(etag)
	case bulkDelete:
		err = del(etag)
	}
	if err != nil {
		return toAPIError(err, k, id)
	}
	return nil
}

func (h *handler) bulkEnrollments(w http.ResponseWriter, r *http.Request) error {
	var req bulkEnrollmentRequest
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	if err := checkBulk(req.Mode, len(req.Enrollments), "enrollments"); err != nil {
		return err
	}
	res := bulkEnrollmentResult{IsSuccessful: true, Errors: []bulkEnrollmentError{}}
	seen := map[string]bool{}
	for _, item := range req.Enrollments {
		e, err := provisioning.DecodeEnrollment(bytes.NewReader(item))
		if err != nil {
			var id struct {
				RegistrationID string `json:"registrationId"`
			}
			_ = json.Unmarshal(item, &id) // best effort, to name the item
			ae := toAPIError(err, kindEnrollment, id.RegistrationID)
			res.IsSuccessful = false
			res.Errors = append(res.Errors, bulkEnrollmentError{RegistrationID: id.RegistrationID, ErrorCode: ae.code, ErrorStatus: ae.msg})
			continue
		}
		ae := bulkItem(kindEnrollment, req.Mode, e.RegistrationID, e.ETag, seen,
			func() error { _, err := h.store.GetEnrollment(r.Context(), e.RegistrationID); return err },
			func(m string) error { _, err := h.writeEnrollment(r.Context(), e, m); return err },
			func(m string) error { return h.store.DeleteEnrollment(r.Context(), e.RegistrationID, m) })
		if ae != nil {
			res.IsSuccessful = false
			res.Errors = append(res.Errors, bulkEnrollmentError{RegistrationID: e.RegistrationID, ErrorCode: ae.code, ErrorStatus: ae.msg})
			if ae.cause != nil {
				info(r).cause = ae.cause
			}
		}
	}
	writeJSON(w, http.StatusOK, res, "")
	return nil
}
