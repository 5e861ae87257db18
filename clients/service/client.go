// Package service is the Go client of dpsbroker's admin API (broker/admin):
// enrollments, enrollment groups, registration records and CA certificates
// in the shapes of the Azure DPS service API.
//
// The caller owns the transport: pass an *http.Client whose TLS
// configuration trusts the server (RootCAs). Every method takes a context
// first. Server errors come back as *APIError, which also matches
// provisioning.ErrNotFound, ErrPreconditionFailed and ErrStoreUnavailable
// with errors.Is.
package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// APIVersion is sent with every request. The server accepts any version;
// this is the DPS service API version whose shapes it serves.
const APIVersion = "2021-10-01"

// maxResponseBytes bounds what the client reads of one response: a full
// page of a thousand enrollments with certificates is a few MB.
const maxResponseBytes = 64 << 20

// Client talks to one admin API. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client for the admin API at baseURL (for example
// "https://127.0.0.1:8443"), authenticating with the bearer token.
// httpClient nil means http.DefaultClient, which trusts the system roots.
func New(baseURL, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: httpClient}
}

// APIError is an error answer of the server: the HTTP status and the DPS
// error body.
type APIError struct {
	StatusCode int
	Details    wire.ErrorDetails
}

// Error includes the server's message and tracking ID, which find the
// request in the server's log.
func (e *APIError) Error() string {
	msg := e.Details.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	s := fmt.Sprintf("%s (HTTP %d", msg, e.StatusCode)
	if e.Details.ErrorCode != 0 {
		s += ", errorCode " + strconv.Itoa(e.Details.ErrorCode)
	}
	if e.Details.TrackingID != "" {
		s += ", trackingId " + e.Details.TrackingID
	}
	return s + ")"
}

// Is maps statuses to the provisioning sentinels, so that callers branch
// the same way on the client as on a store.
func (e *APIError) Is(target error) bool {
	switch target {
	case provisioning.ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case provisioning.ErrPreconditionFailed:
		return e.StatusCode == http.StatusPreconditionFailed
	case provisioning.ErrStoreUnavailable:
		return e.StatusCode == http.StatusServiceUnavailable
	}
	return false
}

// request describes one call.
type request struct {
	method  string
	path    string // already escaped
	body    any
	ifMatch string
	header  map[string]string
	out     any // decoded on 2xx when non-nil
}

// do sends r and returns the response headers.
func (c *Client) do(ctx context.Context, r request) (http.Header, error) {
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path+"?api-version="+APIVersion, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dpsbroker-service-client")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if r.ifMatch != "" {
		req.Header.Set("If-Match", r.ifMatch)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read response: %w", r.method, r.path, err)
	}
	if len(data) > maxResponseBytes {
		return nil, fmt.Errorf("%s %s: response larger than %d bytes", r.method, r.path, maxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, apiError(resp.StatusCode, data)
	}
	if r.out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, r.out); err != nil {
			return nil, fmt.Errorf("%s %s: decode response: %w", r.method, r.path, err)
		}
	}
	return resp.Header, nil
}

// apiError builds the error of a non-2xx answer. A body that is not the
// DPS shape (a proxy's page, say) is kept, shortened, as the message.
func apiError(status int, data []byte) *APIError {
	e := &APIError{StatusCode: status}
	if err := json.Unmarshal(data, &e.Details); err != nil || e.Details.Message == "" {
		e.Details = wire.ErrorDetails{Message: shorten(strings.TrimSpace(string(data)))}
	}
	return e
}

func shorten(s string) string {
	const max = 300
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// esc escapes one path segment.
func esc(s string) string { return url.PathEscape(s) }

// Individual enrollments.

// PutEnrollment creates or replaces an enrollment. ifMatch "" writes
// unconditionally; otherwise the stored etag must equal it ("*": must
// exist). It returns the stored enrollment with its new etag.
func (c *Client) PutEnrollment(ctx context.Context, e *provisioning.IndividualEnrollment, ifMatch string) (*provisioning.IndividualEnrollment, error) {
	var out provisioning.IndividualEnrollment
	_, err := c.do(ctx, request{method: http.MethodPut, path: "/enrollments/" + esc(e.RegistrationID), body: e, ifMatch: ifMatch, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetEnrollment reads an enrollment, with certificate info and its
// registration state.
func (c *Client) GetEnrollment(ctx context.Context, registrationID string) (*provisioning.IndividualEnrollment, error) {
	var out provisioning.IndividualEnrollment
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/enrollments/" + esc(registrationID), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteEnrollment deletes an enrollment; ifMatch as in PutEnrollment.
func (c *Client) DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/enrollments/" + esc(registrationID), ifMatch: ifMatch})
	return err
}

// QueryEnrollments returns one page of enrollments. pageSize 0 lets the
// server choose; continuation "" starts at the beginning. next is "" on the
// last page.
func (c *Client) QueryEnrollments(ctx context.Context, pageSize int, continuation string) (page []*provisioning.IndividualEnrollment, next string, err error) {
	next, err = c.query(ctx, "/enrollments/query", pageSize, continuation, &page)
	return page, next, err
}

// ListEnrollments returns every enrollment, paging through the query.
func (c *Client) ListEnrollments(ctx context.Context) ([]*provisioning.IndividualEnrollment, error) {
	return listAll(ctx, c.QueryEnrollments)
}

// Enrollment groups.

// PutEnrollmentGroup creates or replaces a group; ifMatch as in
// PutEnrollment.
func (c *Client) PutEnrollmentGroup(ctx context.Context, g *provisioning.EnrollmentGroup, ifMatch string) (*provisioning.EnrollmentGroup, error) {
	var out provisioning.EnrollmentGroup
	_, err := c.do(ctx, request{method: http.MethodPut, path: "/enrollmentGroups/" + esc(g.EnrollmentGroupID), body: g, ifMatch: ifMatch, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetEnrollmentGroup reads a group, with certificate info.
func (c *Client) GetEnrollmentGroup(ctx context.Context, groupID string) (*provisioning.EnrollmentGroup, error) {
	var out provisioning.EnrollmentGroup
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/enrollmentGroups/" + esc(groupID), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteEnrollmentGroup deletes a group; its registration records stay.
func (c *Client) DeleteEnrollmentGroup(ctx context.Context, groupID, ifMatch string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/enrollmentGroups/" + esc(groupID), ifMatch: ifMatch})
	return err
}

// QueryEnrollmentGroups returns one page of groups; paging as in
// QueryEnrollments.
func (c *Client) QueryEnrollmentGroups(ctx context.Context, pageSize int, continuation string) (page []*provisioning.EnrollmentGroup, next string, err error) {
	next, err = c.query(ctx, "/enrollmentGroups/query", pageSize, continuation, &page)
	return page, next, err
}

// ListEnrollmentGroups returns every group.
func (c *Client) ListEnrollmentGroups(ctx context.Context) ([]*provisioning.EnrollmentGroup, error) {
	return listAll(ctx, c.QueryEnrollmentGroups)
}

// Registration records.

// GetRegistration reads the registration record of a device.
func (c *Client) GetRegistration(ctx context.Context, registrationID string) (*provisioning.RegistrationState, error) {
	var out provisioning.RegistrationState
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/registrations/" + esc(registrationID), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteRegistration deletes a registration record, so that the device
// registers afresh next time.
func (c *Client) DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/registrations/" + esc(registrationID), ifMatch: ifMatch})
	return err
}

// QueryRegistrations returns one page of the records a group admitted, or
// of every record when groupID is "" (a dpsbroker extension).
func (c *Client) QueryRegistrations(ctx context.Context, groupID string, pageSize int, continuation string) (page []*provisioning.RegistrationState, next string, err error) {
	path := "/registrations/query"
	if groupID != "" {
		path = "/registrations/" + esc(groupID) + "/query"
	}
	next, err = c.query(ctx, path, pageSize, continuation, &page)
	return page, next, err
}

// ListRegistrations returns every record of a group ("" for all).
func (c *Client) ListRegistrations(ctx context.Context, groupID string) ([]*provisioning.RegistrationState, error) {
	return listAll(ctx, func(ctx context.Context, n int, cont string) ([]*provisioning.RegistrationState, string, error) {
		return c.QueryRegistrations(ctx, groupID, n, cont)
	})
}

// query runs one page of a DPS query.
func (c *Client) query(ctx context.Context, path string, pageSize int, continuation string, out any) (string, error) {
	hdr := map[string]string{}
	if pageSize > 0 {
		hdr["x-ms-max-item-count"] = strconv.Itoa(pageSize)
	}
	if continuation != "" {
		hdr["x-ms-continuation"] = continuation
	}
	h, err := c.do(ctx, request{method: http.MethodPost, path: path, body: map[string]string{"query": "*"}, header: hdr, out: out})
	if err != nil {
		return "", err
	}
	return h.Get("x-ms-continuation"), nil
}

// maxPages stops a server that never ends a query.
const maxPages = 100000

func listAll[T any](ctx context.Context, page func(context.Context, int, string) ([]T, string, error)) ([]T, error) {
	var all []T
	cont := ""
	for range maxPages {
		items, next, err := page(ctx, 0, cont)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		if next == cont {
			return nil, errors.New("server returned the same continuation token twice")
		}
		cont = next
	}
	return nil, fmt.Errorf("query did not end after %d pages", maxPages)
}

// Bulk operations.

// BulkMode is the mode of a bulk operation.
type BulkMode string

// Bulk modes (DPS). Create fails for entries that exist; update writes
// unconditionally; updateIfMatchETag needs each entry's etag; delete uses
// the etag when set.
const (
	BulkCreate            BulkMode = "create"
	BulkUpdate            BulkMode = "update"
	BulkUpdateIfMatchETag BulkMode = "updateIfMatchETag"
	BulkDelete            BulkMode = "delete"
)

// MaxBulkItems is the most entries one bulk request may carry.
const MaxBulkItems = 10

// BulkResult is the answer to a bulk request: items are applied one by
// one, and Errors lists those that failed.
type BulkResult struct {
	IsSuccessful bool        `json:"isSuccessful"`
	Errors       []BulkError `json:"errors"`
}

// BulkError is one failed item. RegistrationID is set for enrollments,
// EnrollmentGroupID for groups.
type BulkError struct {
	RegistrationID    string `json:"registrationId,omitempty"`
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	ErrorCode         int    `json:"errorCode"`
	ErrorStatus       string `json:"errorStatus"`
}

// BulkEnrollments applies mode to up to MaxBulkItems enrollments.
func (c *Client) BulkEnrollments(ctx context.Context, mode BulkMode, es []*provisioning.IndividualEnrollment) (*BulkResult, error) {
	var out BulkResult
	body := struct {
		Mode        BulkMode                             `json:"mode"`
		Enrollments []*provisioning.IndividualEnrollment `json:"enrollments"`
	}{mode, es}
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/enrollments", body: body, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// BulkEnrollmentGroups applies mode to up to MaxBulkItems groups.
func (c *Client) BulkEnrollmentGroups(ctx context.Context, mode BulkMode, gs []*provisioning.EnrollmentGroup) (*BulkResult, error) {
	var out BulkResult
	body := struct {
		Mode             BulkMode                        `json:"mode"`
		EnrollmentGroups []*provisioning.EnrollmentGroup `json:"enrollmentGroups"`
	}{mode, gs}
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/enrollmentGroups", body: body, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// CA certificates.

// PutCACertificate uploads or replaces a CA certificate (c.Name names it).
// IsVerified true self-attests possession of its key; otherwise prove it
// with GenerateVerificationCode and VerifyCACertificate.
func (c *Client) PutCACertificate(ctx context.Context, ca *provisioning.CACertificate, ifMatch string) (*provisioning.CACertificate, error) {
	var out provisioning.CACertificate
	_, err := c.do(ctx, request{method: http.MethodPut, path: "/certificates/" + esc(ca.Name), body: ca, ifMatch: ifMatch, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetCACertificate reads a CA certificate.
func (c *Client) GetCACertificate(ctx context.Context, name string) (*provisioning.CACertificate, error) {
	var out provisioning.CACertificate
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/certificates/" + esc(name), out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteCACertificate deletes a CA certificate.
func (c *Client) DeleteCACertificate(ctx context.Context, name, ifMatch string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/certificates/" + esc(name), ifMatch: ifMatch})
	return err
}

// ListCACertificates returns every CA certificate.
func (c *Client) ListCACertificates(ctx context.Context) ([]*provisioning.CACertificate, error) {
	var out struct {
		Value []*provisioning.CACertificate `json:"value"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/certificates", out: &out}); err != nil {
		return nil, err
	}
	return out.Value, nil
}

// GenerateVerificationCode starts proof of possession: the returned
// certificate carries VerificationCode, which must become the subject CN of
// a certificate signed by the CA's key.
func (c *Client) GenerateVerificationCode(ctx context.Context, name, ifMatch string) (*provisioning.CACertificate, error) {
	var out provisioning.CACertificate
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/certificates/" + esc(name) + "/generateVerificationCode", ifMatch: ifMatch, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// VerifyCACertificate completes proof of possession with certificatePEM
// (subject CN = the verification code, signed by the CA's key). On success
// the CA certificate is verified and groups may reference it.
func (c *Client) VerifyCACertificate(ctx context.Context, name, ifMatch, certificatePEM string) (*provisioning.CACertificate, error) {
	var out provisioning.CACertificate
	body := map[string]string{"certificate": certificatePEM}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/certificates/" + esc(name) + "/verify", body: body, ifMatch: ifMatch, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
