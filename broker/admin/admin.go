// Package admin serves dpsbroker's admin API: HTTPS + JSON in the shapes of
// the Azure DPS service API (individual enrollments, enrollment groups,
// registration records, bulk operations and queries), plus CA certificates
// with the proof-of-possession flow of the DPS management plane.
//
// The handler is transport-agnostic: the broker serves it on its own TLS
// listener. Every request must carry "Authorization: Bearer <token>"; every
// error body is a DPS ProvisioningServiceErrorDetails.
package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// DefaultMaxBodyBytes bounds a request body when Options.MaxBodyBytes is
// zero. Ten enrollments of a bulk request with two certificates each fit
// well within it.
const DefaultMaxBodyBytes = 256 << 10

// AdminStore is what the admin API needs of a provisioning store. Both the
// embedded and the Redis store satisfy it through provisioning.Store.
type AdminStore interface {
	provisioning.EnrollmentStore
	provisioning.CAStore

	GetEnrollmentGroup(ctx context.Context, groupID string) (*provisioning.EnrollmentGroup, error)
	PutEnrollmentGroup(ctx context.Context, g *provisioning.EnrollmentGroup, ifMatch string) (*provisioning.EnrollmentGroup, error)
	DeleteEnrollmentGroup(ctx context.Context, groupID, ifMatch string) error
	ListEnrollmentGroups(ctx context.Context) ([]*provisioning.EnrollmentGroup, error)

	GetRegistration(ctx context.Context, registrationID string) (*provisioning.RegistrationState, error)
	DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error
	ListRegistrations(ctx context.Context, groupID, cursor string, limit int) ([]*provisioning.RegistrationState, string, error)
}

// Options configures NewHandler.
type Options struct {
	// Store keeps the entries the API manages. Required.
	Store AdminStore
	// Token is the bearer token every request must present. Empty refuses
	// every request: an admin API without a secret must not be open.
	Token string
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies (413 beyond it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Rand is the source of generated symmetric keys, verification codes
	// and tracking IDs; nil means crypto/rand.
	Rand io.Reader
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// handler is the admin API. Fields are read-only after NewHandler.
type handler struct {
	store     AdminStore
	tokenHash [sha256.Size]byte
	hasToken  bool
	log       *slog.Logger
	maxBody   int64
	rand      io.Reader
	now       func() time.Time
	mux       *http.ServeMux
}

// NewHandler returns the admin API. Mount it at the root of its listener, or
// under a prefix with http.StripPrefix.
func NewHandler(opts Options) (http.Handler, error) {
	if opts.Store == nil {
		return nil, errors.New("admin: Options.Store is required")
	}
	if opts.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("admin: Options.MaxBodyBytes is negative (%d)", opts.MaxBodyBytes)
	}
	h := &handler{
		store:   opts.Store,
		log:     opts.Logger,
		maxBody: opts.MaxBodyBytes,
		rand:    opts.Rand,
		now:     opts.Now,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.rand == nil {
		h.rand = rand.Reader
	}
	if h.now == nil {
		h.now = time.Now
	}
	if opts.Token != "" {
		// Hashing first makes the comparison constant-time in the length
		// of the presented token too.
		h.tokenHash = sha256.Sum256([]byte(opts.Token))
		h.hasToken = true
	} else {
		h.log.Warn("admin API has no token configured; it refuses every request")
	}
	mux, err := h.routes()
	if err != nil {
		return nil, err
	}
	h.mux = mux
	return h, nil
}

// route is one path of the API with its handlers by method.
type route struct {
	path    string
	methods map[string]apiFunc
	// noFallback leaves out the 405 catch-all for paths that overlap a
	// wildcard path (POST /enrollments/query and /enrollments/{id}): there
	// the wildcard route answers other methods.
	noFallback bool
}

// apiFunc handles one request; a returned error becomes the DPS error body.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

func (h *handler) routes() (mux *http.ServeMux, err error) {
	// ServeMux panics on conflicting patterns; report that as an error.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("admin: routes: %v", p)
		}
	}()
	table := []route{
		{path: "/enrollments", methods: map[string]apiFunc{"POST": h.bulkEnrollments}},
		{path: "/enrollments/query", methods: map[string]apiFunc{"POST": h.queryEnrollments}, noFallback: true},
		{path: "/enrollments/{registrationId}", methods: map[string]apiFunc{"GET": h.getEnrollment, "PUT": h.putEnrollment, "DELETE": h.deleteEnrollment}},
		{path: "/enrollments/{registrationId}/attestationmechanism", methods: map[string]apiFunc{"POST": h.enrollmentAttestation}},
		{path: "/enrollmentGroups", methods: map[string]apiFunc{"POST": h.bulkGroups}},
		{path: "/enrollmentGroups/query", methods: map[string]apiFunc{"POST": h.queryGroups}, noFallback: true},
		{path: "/enrollmentGroups/{enrollmentGroupId}", methods: map[string]apiFunc{"GET": h.getGroup, "PUT": h.putGroup, "DELETE": h.deleteGroup}},
		{path: "/enrollmentGroups/{enrollmentGroupId}/attestationmechanism", methods: map[string]apiFunc{"POST": h.groupAttestation}},
		{path: "/registrations/query", methods: map[string]apiFunc{"POST": h.queryAllRegistrations}, noFallback: true},
		{path: "/registrations/{registrationId}", methods: map[string]apiFunc{"GET": h.getRegistration, "DELETE": h.deleteRegistration}},
		{path: "/registrations/{enrollmentGroupId}/query", methods: map[string]apiFunc{"POST": h.queryGroupRegistrations}},
		{path: "/certificates", methods: map[string]apiFunc{"GET": h.listCertificates}},
		{path: "/certificates/{name}", methods: map[string]apiFunc{"GET": h.getCertificate, "PUT": h.putCertificate, "DELETE": h.deleteCertificate}},
		{path: "/certificates/{name}/generateVerificationCode", methods: map[string]apiFunc{"POST": h.generateVerificationCode}},
		{path: "/certificates/{name}/verify", methods: map[string]apiFunc{"POST": h.verifyCertificate}},
	}
	mux = http.NewServeMux()
	for _, rt := range table {
		allowed := make([]string, 0, len(rt.methods))
		for _, m := range []string{"GET", "PUT", "POST", "DELETE"} {
			if f, ok := rt.methods[m]; ok {
				mux.Handle(m+" "+rt.path, h.api(f))
				allowed = append(allowed, m)
			}
		}
		if !rt.noFallback {
			allow := strings.Join(allowed, ", ")
			mux.Handle(rt.path, h.api(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Allow", allow)
				return &apiError{status: http.StatusMethodNotAllowed, code: ErrorCodeMethodNotAllowed,
					msg: fmt.Sprintf("method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow)}
			}))
		}
	}
	mux.Handle("/", h.api(func(w http.ResponseWriter, r *http.Request) error {
		return &apiError{status: http.StatusNotFound, code: ErrorCodeRouteNotFound,
			msg: fmt.Sprintf("no such resource: %s %s", r.Method, r.URL.Path)}
	}))
	return mux, nil
}

// api adapts an apiFunc: its error becomes the response.
func (h *handler) api(f apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			h.writeError(w, r, err)
		}
	})
}

// requestInfo travels in the request context so that error bodies and the
// request log line agree on the tracking ID and the cause of a failure.
type requestInfo struct {
	trackingID string
	cause      error // internal error behind a 5xx, for the log only
}

type requestInfoKey struct{}

func info(r *http.Request) *requestInfo {
	if ri, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{}
}

// statusWriter records the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP authenticates, bounds the body, routes and logs one line.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	ri := &requestInfo{trackingID: h.newTrackingID()}
	r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, ri))
	sw := &statusWriter{ResponseWriter: w}
	sw.Header().Set("x-ms-request-id", ri.trackingID)

	switch {
	case !h.authorized(r):
		sw.Header().Set("WWW-Authenticate", `Bearer realm="dpsbroker-admin"`)
		msg := "missing or invalid bearer token"
		if !h.hasToken {
			msg = "the admin API has no token configured and refuses every request"
		}
		h.writeError(sw, r, &apiError{status: http.StatusUnauthorized, code: ErrorCodeUnauthorized, msg: msg})
	case r.ContentLength > h.maxBody:
		h.writeError(sw, r, tooLarge(h.maxBody))
	default:
		if r.Body != nil {
			r.Body = http.MaxBytesReader(sw, r.Body, h.maxBody)
		}
		h.mux.ServeHTTP(sw, r)
	}

	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	attrs := []any{
		"method", r.Method,
		"path", r.URL.Path, // never the query or headers: they may carry secrets
		"status", sw.status,
		"duration", h.now().Sub(start),
		"trackingId", ri.trackingID,
	}
	level := slog.LevelInfo
	if sw.status >= 500 {
		level = slog.LevelError
		if ri.cause != nil {
			attrs = append(attrs, "error", ri.cause.Error())
		}
	}
	h.log.Log(r.Context(), level, "admin request", attrs...)
}

// authorized checks the bearer token in constant time. No token configured
// means nobody is authorized.
func (h *handler) authorized(r *http.Request) bool {
	if !h.hasToken {
		return false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], h.tokenHash[:]) == 1
}

// newTrackingID returns a random GUID, the form Azure tracking IDs take.
func (h *handler) newTrackingID() string {
	var b [16]byte
	if _, err := io.ReadFull(h.rand, b[:]); err != nil {
		// A tracking ID only correlates logs; a fixed one is acceptable
		// when the random source fails, and the request still proceeds.
		return "00000000-0000-4000-8000-000000000000"
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
