package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func (h *handler) getGroup(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("enrollmentGroupId")
	g, err := h.store.GetEnrollmentGroup(r.Context(), id)
	if err != nil {
		return toAPIError(err, kindGroup, id)
	}
	g.FillInfo()
	writeJSON(w, http.StatusOK, g, g.ETag)
	return nil
}

// groupAttestation returns the group's attestation with its keys.
func (h *handler) groupAttestation(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("enrollmentGroupId")
	g, err := h.store.GetEnrollmentGroup(r.Context(), id)
	if err != nil {
		return toAPIError(err, kindGroup, id)
	}
	g.FillInfo()
	writeJSON(w, http.StatusOK, g.Attestation, "")
	return nil
}

func (h *handler) putGroup(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("enrollmentGroupId")
	g, err := decodeEntity(r, provisioning.DecodeEnrollmentGroup)
	if err != nil {
		return toAPIError(err, kindGroup, id)
	}
	if !strings.EqualFold(g.EnrollmentGroupID, id) {
		return badRequest(ErrorCodeIDMismatch, "enrollmentGroupId %q in the body differs from %q in the path", g.EnrollmentGroupID, id)
	}
	out, err := h.writeGroup(r.Context(), g, ifMatch(r))
	if err != nil {
		return toAPIError(err, kindGroup, id)
	}
	writeJSON(w, http.StatusOK, out, out.ETag)
	return nil
}

// writeGroup prepares, validates and stores g, and returns the stored entry
// as clients see it.
func (h *handler) writeGroup(ctx context.Context, g *provisioning.EnrollmentGroup, etag string) (*provisioning.EnrollmentGroup, error) {
	g.ETag = ""
	g.CreatedDateTimeUTC, g.LastUpdatedDateTimeUTC = nil, nil
	clearInfo(g.Attestation.X509)
	if err := g.Attestation.GenerateMissingKeys(h.rand); err != nil {
		return nil, err
	}
	if err := h.validateGroup(ctx, g); err != nil {
		return nil, err
	}
	out, err := h.store.PutEnrollmentGroup(ctx, g, etag)
	if err != nil {
		return nil, err
	}
	out.FillInfo()
	return out, nil
}

// validateGroup adds to the group's own checks that every CA reference
// names an uploaded, verified CA certificate, as DPS requires.
func (h *handler) validateGroup(ctx context.Context, g *provisioning.EnrollmentGroup) error {
	ve := &provisioning.ValidationError{}
	if err := g.Validate(); err != nil && !errors.As(err, &ve) {
		return err
	}
	if x := g.Attestation.X509; x != nil && x.CAReferences != nil {
		for _, ref := range []struct{ field, name string }{
			{"attestation.x509.caReferences.primary", x.CAReferences.Primary},
			{"attestation.x509.caReferences.secondary", x.CAReferences.Secondary},
		} {
			if ref.name == "" || provisioning.ValidateCACertificateName(ref.name) != nil {
				continue // reported by Validate
			}
			ca, err := h.store.GetCACertificate(ctx, ref.name)
			switch {
			case errors.Is(err, provisioning.ErrNotFound):
				ve.Problems = append(ve.Problems, provisioning.FieldError{Field: ref.field,
					Message: "CA certificate " + quote(ref.name) + " is not uploaded (PUT /certificates/" + ref.name + " first)"})
			case err != nil:
				return err
			case !ca.IsVerified:
				ve.Problems = append(ve.Problems, provisioning.FieldError{Field: ref.field,
					Message: "CA certificate " + quote(ref.name) + " is not verified; prove possession of its key first (generateVerificationCode, then verify)"})
			}
		}
	}
	if len(ve.Problems) > 0 {
		return ve
	}
	return nil
}

func (h *handler) deleteGroup(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("enrollmentGroupId")
	if err := h.store.DeleteEnrollmentGroup(r.Context(), id, ifMatch(r)); err != nil {
		return toAPIError(err, kindGroup, id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) queryGroups(w http.ResponseWriter, r *http.Request) error {
	if err := checkQuery(r, "enrollmentGroups"); err != nil {
		return err
	}
	limit, cursor, err := paging(r)
	if err != nil {
		return err
	}
	all, err := h.store.ListEnrollmentGroups(r.Context())
	if err != nil {
		return toAPIError(err, kindGroup, "")
	}
	// The store returns every group; page over them by key here. The
	// slice is shared between callers, so sort a copy.
	sorted := make([]*provisioning.EnrollmentGroup, len(all))
	copy(sorted, all)
	sort.Slice(sorted, func(i, j int) bool { return groupKey(sorted[i]) < groupKey(sorted[j]) })
	start := sort.Search(len(sorted), func(i int) bool { return groupKey(sorted[i]) > cursor })
	end := min(start+limit, len(sorted))
	page := make([]*provisioning.EnrollmentGroup, 0, end-start)
	for _, g := range sorted[start:end] {
		c, err := cloneGroup(g)
		if err != nil {
			return toAPIError(err, kindGroup, g.EnrollmentGroupID)
		}
		c.FillInfo()
		page = append(page, c)
	}
	next := ""
	if end < len(sorted) && end > start {
		next = groupKey(sorted[end-1])
	}
	writePage(w, "EnrollmentGroup", page, next)
	return nil
}

func groupKey(g *provisioning.EnrollmentGroup) string {
	return provisioning.RegistrationKey(g.EnrollmentGroupID)
}

// cloneGroup deep-copies a group of the store's shared snapshot before
// FillInfo writes into it.
func cloneGroup(g *provisioning.EnrollmentGroup) (*provisioning.EnrollmentGroup, error) {
	b, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	var c provisioning.EnrollmentGroup
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

type bulkGroupRequest struct {
	Mode             string            `json:"mode"`
	EnrollmentGroups []json.RawMessage `json:"enrollmentGroups"`
}

type bulkGroupResult struct {
	IsSuccessful bool             `json:"isSuccessful"`
	Errors       []bulkGroupError `json:"errors"`
}

type bulkGroupError struct {
	EnrollmentGroupID string `json:"enrollmentGroupId"`
	ErrorCode         int    `json:"errorCode"`
	ErrorStatus       string `json:"errorStatus"`
}

func (h *handler) bulkGroups(w http.ResponseWriter, r *http.Request) error {
	var req bulkGroupRequest
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	if err := checkBulk(req.Mode, len(req.EnrollmentGroups), "enrollmentGroups"); err != nil {
		return err
	}
	res := bulkGroupResult{IsSuccessful: true, Errors: []bulkGroupError{}}
	seen := map[string]bool{}
	for _, item := range req.EnrollmentGroups {
		g, err := provisioning.DecodeEnrollmentGroup(bytes.NewReader(item))
		if err != nil {
			var id struct {
				EnrollmentGroupID string `json:"enrollmentGroupId"`
			}
			_ = json.Unmarshal(item, &id) // best effort, to name the item
			ae := toAPIError(err, kindGroup, id.EnrollmentGroupID)
			res.IsSuccessful = false
			res.Errors = append(res.Errors, bulkGroupError{EnrollmentGroupID: id.EnrollmentGroupID, ErrorCode: ae.code, ErrorStatus: ae.msg})
			continue
		}
		ae := bulkItem(kindGroup, req.Mode, g.EnrollmentGroupID, g.ETag, seen,
			func() error { _, err := h.store.GetEnrollmentGroup(r.Context(), g.EnrollmentGroupID); return err },
			func(m string) error { _, err := h.writeGroup(r.Context(), g, m); return err },
			func(m string) error { return h.store.DeleteEnrollmentGroup(r.Context(), g.EnrollmentGroupID, m) })
		if ae != nil {
			res.IsSuccessful = false
			res.Errors = append(res.Errors, bulkGroupError{EnrollmentGroupID: g.EnrollmentGroupID, ErrorCode: ae.code, ErrorStatus: ae.msg})
			if ae.cause != nil {
				info(r).cause = ae.cause
			}
		}
	}
	writeJSON(w, http.StatusOK, res, "")
	return nil
}
