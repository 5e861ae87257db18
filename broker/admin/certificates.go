package admin

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// verificationCodeBytes is the entropy of a proof-of-possession code. Its
// hex form (48 characters) fits the 64-character CN limit.
const verificationCodeBytes = 24

func quote(s string) string { return strconv.Quote(s) }

func (h *handler) getCertificate(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	c, err := h.store.GetCACertificate(r.Context(), name)
	if err != nil {
		return toAPIError(err, kindCA, name)
	}
	writeJSON(w, http.StatusOK, c, c.ETag)
	return nil
}

// certificateList is the ARM CertificateListDescription shape.
type certificateList struct {
	Value []*provisioning.CACertificate `json:"value"`
}

func (h *handler) listCertificates(w http.ResponseWriter, r *http.Request) error {
	list, err := h.store.ListCACertificates(r.Context())
	if err != nil {
		return toAPIError(err, kindCA, "")
	}
	writeJSON(w, http.StatusOK, certificateList{Value: nonNil(list)}, "")
	return nil
}

// putCertificate uploads a CA certificate. The body is the CACertificate
// JSON; the name may be left out (it comes from the path). isVerified:true
// self-attests possession ("verify on upload"); otherwise the owner proves
// it with generateVerificationCode and verify. Replacing a certificate
// drops any pending verification code.
func (h *handler) putCertificate(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	c, err := decodeEntity(r, provisioning.DecodeCACertificate)
	if err != nil {
		return toAPIError(err, kindCA, name)
	}
	switch {
	case c.Name == "":
		c.Name = name
	case !strings.EqualFold(c.Name, name):
		return badRequest(ErrorCodeIDMismatch, "name %q in the body differs from %q in the path", c.Name, name)
	}
	c.VerificationCode = ""
	c.Subject, c.Thumbprint, c.Expiry = "", "", nil
	c.ETag, c.Created, c.Updated = "", nil, nil
	if err := c.Validate(); err != nil {
		return toAPIError(err, kindCA, name)
	}
	if err := c.FillInfo(); err != nil {
		return toAPIError(err, kindCA, name) // Validate parsed it already
	}
	out, err := h.store.PutCACertificate(r.Context(), c, ifMatch(r))
	if err != nil {
		return toAPIError(err, kindCA, name)
	}
	writeJSON(w, http.StatusOK, out, out.ETag)
	return nil
}

func (h *handler) deleteCertificate(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := h.store.DeleteCACertificate(r.Context(), name, ifMatch(r)); err != nil {
		return toAPIError(err, kindCA, name)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// generateVerificationCode stores a fresh random code on the certificate
// and returns the certificate with it. If-Match, when sent, must match.
func (h *handler) generateVerificationCode(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	c, etag, err := h.caForUpdate(r.Context(), name, ifMatch(r))
	if err != nil {
		return err
	}
	b := make([]byte, verificationCodeBytes)
	if _, err := io.ReadFull(h.rand, b); err != nil {
		return toAPIError(fmt.Errorf("verification code: %w", err), kindCA, name)
	}
	c.VerificationCode = strings.ToUpper(hex.EncodeToString(b))
	out, err := h.store.PutCACertificate(r.Context(), c, etag)
	if err != nil {
		return toAPIError(err, kindCA, name)
	}
	writeJSON(w, http.StatusOK, out, out.ETag)
	return nil
}

// verifyRequest is the body of POST /certificates/{name}/verify.
type verifyRequest struct {
	Certificate string `json:"certificate"`
}

// verifyCertificate completes proof of possession: the posted certificate
// must name the pending verification code as its subject CN and be signed
// by the CA's key. The code is single-use.
func (h *handler) verifyCertificate(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var req verifyRequest
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	c, etag, err := h.caForUpdate(r.Context(), name, ifMatch(r))
	if err != nil {
		return err
	}
	if c.VerificationCode == "" {
		return badRequest(ErrorCodeNoVerificationCode, "CA certificate %q has no pending verification code; call generateVerificationCode first", name)
	}
	if req.Certificate == "" {
		return badRequest(ErrorCodeValidation, "certificate is required: a PEM certificate whose subject CN is the verification code, signed by the CA's key")
	}
	proof, err := provisioning.ParseCertificate(req.Certificate)
	if err != nil {
		return badRequest(ErrorCodeVerificationFailed, "certificate: %v", err)
	}
	if subtle.ConstantTimeCompare([]byte(proof.Subject.CommonName), []byte(c.VerificationCode)) != 1 {
		return badRequest(ErrorCodeVerificationFailed, "the subject CN of the certificate is not the verification code of CA certificate %q", name)
	}
	ca, err := provisioning.ParseCertificate(c.Certificate)
	if err != nil {
		return toAPIError(fmt.Errorf("stored CA certificate %q: %w", name, err), kindCA, name)
	}
	if err := proof.CheckSignatureFrom(ca); err != nil {
		return badRequest(ErrorCodeVerificationFailed, "the certificate is not signed by the key of CA certificate %q: %v", name, err)
	}
	if now := h.now(); now.Before(proof.NotBefore) || now.After(proof.NotAfter) {
		return badRequest(ErrorCodeVerificationFailed, "the certificate is not valid now (valid %s to %s)", proof.NotBefore.UTC().Format("2006-01-02T15:04:05Z"), proof.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
	}
	c.IsVerified = true
	c.VerificationCode = ""
	out, err := h.store.PutCACertificate(r.Context(), c, etag)
	if err != nil {
		return toAPIError(err, kindCA, name)
	}
	writeJSON(w, http.StatusOK, out, out.ETag)
	return nil
}

// caForUpdate reads a CA certificate for a read-modify-write and returns
// the etag to write with: the client's If-Match when sent (checked here for
// a clear 412 before any work), else the etag just read, so that a
// concurrent change is never overwritten.
func (h *handler) caForUpdate(ctx context.Context, name, clientETag string) (*provisioning.CACertificate, string, error) {
	c, err := h.store.GetCACertificate(ctx, name)
	if err != nil {
		return nil, "", toAPIError(err, kindCA, name)
	}
	if clientETag != "" && clientETag != "*" && clientETag != c.ETag {
		return nil, "", toAPIError(provisioning.ErrPreconditionFailed, kindCA, name)
	}
	return c, c.ETag, nil
}
