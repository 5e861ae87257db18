package load

import (
	"crypto/tls"
	"strconv"
	"time"
)

// Credential is how a simulated device proves who it is. X.509 is the only
// kind today. A symmetric-key device will return no certificate and a SAS
// token as Password; a TPM device will also answer the 401 challenge of
// its first register request (a method to add here, called by the runner
// when a register answer is 401 with an authenticationKey).
type Credential interface {
	// Kind names the attestation ("x509", later "tpm", "symmetricKey").
	Kind() string
	// ClientCertificate is the TLS client certificate (nil: none).
	ClientCertificate() *tls.Certificate
	// Password is the MQTT CONNECT password at time now (nil: none).
	Password(now time.Time) []byte
}

// X509 is a device certificate with its chain and key.
type X509 struct {
	Cert *tls.Certificate
}

// Kind implements Credential.
func (X509) Kind() string { return "x509" }

// ClientCertificate implements Credential.
func (c X509) ClientCertificate() *tls.Certificate { return c.Cert }

// Password implements Credential: X.509 devices send none.
func (X509) Password(time.Time) []byte { return nil }

// Device is one simulated device.
type Device struct {
	// RegistrationID is the MQTT client ID, the username's registration ID
	// and, for X.509, the certificate's CN.
	RegistrationID string
	Cred           Credential

	// body is the register request body, built once.
	body []byte
	// sessions holds this device's TLS session for --resume. It is per
	// device: a session resumed by another device would present the first
	// device's certificate.
	sessions tls.ClientSessionCache
	rid      uint64
}

// NewDevice makes a device from its registration ID and credential.
func NewDevice(registrationID string, cred Credential) *Device {
	return &Device{
		RegistrationID: registrationID,
		Cred:           cred,
		body:           []byte(`{"registrationId":"` + registrationID + `"}`),
		sessions:       tls.NewLRUClientSessionCache(2),
	}
}

// nextRID is a fresh $rid for this device (devices are used by one worker
// at a time).
func (d *Device) nextRID() string {
	d.rid++
	return strconv.FormatUint(d.rid, 10)
}
