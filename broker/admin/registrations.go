package admin

import (
	"net/http"
)

func (h *handler) getRegistration(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("registrationId")
	reg, err := h.store.GetRegistration(r.Context(), id)
	if err != nil {
		return toAPIError(err, kindRegistration, id)
	}
	writeJSON(w, http.StatusOK, reg, reg.ETag)
	return nil
}

func (h *handler) deleteRegistration(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("registrationId")
	if err := h.store.DeleteRegistration(r.Context(), id, ifMatch(r)); err != nil {
		return toAPIError(err, kindRegistration, id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// queryGroupRegistrations lists the registration records a group admitted.
// The group need not exist: records outlive a deleted group, as in DPS.
func (h *handler) queryGroupRegistrations(w http.ResponseWriter, r *http.Request) error {
	return h.queryRegistrations(w, r, r.PathValue("enrollmentGroupId"))
}

// queryAllRegistrations lists every registration record (beyond the DPS
// API, which only lists per group).
func (h *handler) queryAllRegistrations(w http.ResponseWriter, r *http.Request) error {
	return h.queryRegistrations(w, r, "")
}

func (h *handler) queryRegistrations(w http.ResponseWriter, r *http.Request, groupID string) error {
	if err := checkQuery(r, "registrations"); err != nil {
		return err
	}
	limit, cursor, err := paging(r)
	if err != nil {
		return err
	}
	page, next, err := h.store.ListRegistrations(r.Context(), groupID, cursor, limit)
	if err != nil {
		return toAPIError(err, kindRegistration, "")
	}
	writePage(w, "DeviceRegistration", nonNil(page), next)
	return nil
}
