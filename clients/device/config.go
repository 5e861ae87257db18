package device

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// Defaults of the zero Config fields. They follow the DPS SDKs: a 2 s
// poll when the broker gives no retry-after (Node, Java, C#), a keepalive
// well below the broker's idle limits.
const (
	DefaultKeepAlive       = 60 * time.Second
	DefaultConnectTimeout  = 30 * time.Second
	DefaultPollInterval    = 2 * time.Second
	DefaultMaxAttempts     = 10
	DefaultRetryBackoff    = time.Second
	DefaultMaxRetryBackoff = time.Minute
	// DefaultClientVersion is sent as the username's ClientVersion.
	DefaultClientVersion = "dpsbroker-device-go/1"
	// DefaultSASTTL is the lifetime of a TPM SAS token, as in the Node and
	// Python SDKs.
	DefaultSASTTL = time.Hour
)

// TPM is what TPM provisioning needs of a TPM. *clients/tpm.Device
// satisfies it; the client never sees key material, only public areas and
// signatures.
type TPM interface {
	// EndorsementKey and StorageRootKey return the marshalled TPM2B_PUBLIC
	// of the EK and SRK.
	EndorsementKey() []byte
	StorageRootKey() []byte
	// ActivateAndImport imports the HMAC key of an authenticationKey blob.
	ActivateAndImport(ctx context.Context, authenticationKey string) error
	// SignSAS signs a SAS token for resource with the imported key.
	SignSAS(ctx context.Context, resource string, expiry time.Time) (string, error)
}

// Config describes one provisioning run of a device. Broker, IDScope and
// an X.509 identity (Certificate, or a certificate in TLSConfig) are
// required; zero values elsewhere take the defaults above.
type Config struct {
	// Broker is host:port of the broker's TLS MQTT listener.
	Broker string
	// IDScope is the DPS ID scope of the fleet.
	IDScope string
	// RegistrationID is the device's registration ID, also its MQTT client
	// ID. For X.509 it defaults to the leaf's subject CN, and must equal it
	// when set (DPS refuses anything else).
	RegistrationID string
	// TLSConfig holds the RootCAs that verify the broker (nil: the system
	// roots) and, if Certificate is nil, the client certificate. It is
	// cloned, never modified. ServerName defaults to Broker's host.
	TLSConfig *tls.Config
	// Certificate is the device's X.509 identity: the leaf, its
	// intermediates and a PrivateKey that may be any crypto.Signer (see
	// X509Identity and LoadX509Identity). It replaces TLSConfig's
	// certificates.
	Certificate *tls.Certificate
	// Payload is custom JSON sent with the register request; the broker
	// hands it to custom allocation. Nil sends none.
	Payload json.RawMessage
	// APIVersion is the username's api-version (default
	// wire.DefaultAPIVersion); ClientVersion its ClientVersion (default
	// DefaultClientVersion).
	APIVersion, ClientVersion string

	// KeepAlive is the MQTT keepalive; ConnectTimeout bounds the TCP dial,
	// the TLS handshake and the wait for CONNACK together.
	KeepAlive, ConnectTimeout time.Duration
	// PollInterval is the wait before a status poll when a 202 carries no
	// retry-after. A retry-after from the broker is always honoured as is.
	PollInterval time.Duration
	// MaxAttempts bounds how often one request (the register, or one poll)
	// is sent while the broker answers 429 or 5xx, and how often a
	// connection is tried while the broker refuses it as busy or
	// unavailable.
	MaxAttempts int
	// RetryBackoff is the first wait after a 429 or 5xx; it doubles on each
	// further attempt up to MaxRetryBackoff, with jitter. The response's
	// retry-after is the floor of every wait.
	RetryBackoff, MaxRetryBackoff time.Duration

	// TPM, when set, provisions with TPM attestation instead of X.509: no
	// client certificate is sent, the register request carries the TPM's
	// endorsement and storage root keys, and the 401 challenge is answered
	// with a SAS token signed inside the TPM (see the package
	// documentation). RegistrationID defaults to the EK's (base32 of
	// SHA-256 of its TPM2B_PUBLIC). *clients/tpm.Device satisfies it.
	TPM TPM
	// EKCertificate is the TPM's EK certificate (DER) and
	// EKCertificateChain the intermediates up to the manufacturer CA, sent
	// for TPM enrollment groups. Read it from the TPM with
	// clients/tpm.Device.EKCertificate.
	EKCertificate      []byte
	EKCertificateChain [][]byte
	// SASTTL is the lifetime of the SAS token answering the TPM challenge
	// (default DefaultSASTTL).
	SASTTL time.Duration
	// AnswerOnReconnect answers the TPM challenge on a new connection with
	// the SAS token as the MQTT password, instead of in the next register
	// request (tpm.sasToken) on the same connection. Both work with
	// dpsbroker.
	AnswerOnReconnect bool

	// Logger receives a Debug record for each step (dial, CONNECT,
	// SUBSCRIBE, each request and response, each wait). Nil discards.
	// Key material is never logged.
	Logger *slog.Logger
	// Dialer opens the transport under TLS (default: a net.Dialer). The
	// client always runs TLS over what it returns.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// ErrInvalidConfig reports a Config that cannot work; the error wrapping
// it says which field.
var ErrInvalidConfig = errors.New("device: invalid config")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// settings is a validated Config with defaults applied.
type settings struct {
	Config
	tls      *tls.Config
	username string
}

func (c Config) resolve() (*settings, error) {
	s := &settings{Config: c}
	if c.Broker == "" {
		return nil, configErr("Broker is empty; want host:port")
	}
	host, _, err := net.SplitHostPort(c.Broker)
	if err != nil {
		return nil, configErr("Broker %q: %v", c.Broker, err)
	}
	if c.IDScope == "" {
		return nil, configErr("IDScope is empty")
	}
	if c.Payload != nil && !json.Valid(c.Payload) {
		return nil, configErr("Payload is not valid JSON")
	}
	if c.TLSConfig != nil {
		s.tls = c.TLSConfig.Clone()
	} else {
		s.tls = &tls.Config{}
	}
	if s.tls.ServerName == "" {
		s.tls.ServerName = host
	}
	if s.tls.MinVersion < tls.VersionTLS12 {
		s.tls.MinVersion = tls.VersionTLS12 // DPS requires TLS 1.2 or later
	}
	if c.Certificate != nil {
		s.tls.Certificates = []tls.Certificate{*c.Certificate}
		s.tls.GetClientCertificate = nil
	}
	if c.TPM != nil {
		if err := s.resolveTPM(); err != nil {
			return nil, err
		}
	} else if err := s.resolveX509(); err != nil {
		return nil, err
	}
	if s.ClientVersion == "" {
		s.ClientVersion = DefaultClientVersion
	}
	s.username = wire.FormatUsername(s.IDScope, s.RegistrationID, s.APIVersion, s.ClientVersion)
	if s.KeepAlive <= 0 {
		s.KeepAlive = DefaultKeepAlive
	}
	if s.KeepAlive > 65535*time.Second {
		s.KeepAlive = 65535 * time.Second
	}
	if s.ConnectTimeout <= 0 {
		s.ConnectTimeout = DefaultConnectTimeout
	}
	if s.PollInterval <= 0 {
		s.PollInterval = DefaultPollInterval
	}
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.RetryBackoff <= 0 {
		s.RetryBackoff = DefaultRetryBackoff
	}
	if s.MaxRetryBackoff <= 0 {
		s.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if s.MaxRetryBackoff < s.RetryBackoff {
		s.MaxRetryBackoff = s.RetryBackoff
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.Dialer == nil {
		d := &net.Dialer{}
		s.Dialer = d.DialContext
	}
	return s, nil
}

// resolveTPM checks a TPM Config: no client certificate, a usable EK, and
// the registration ID (default: the EK's).
func (s *settings) resolveTPM() error {
	if len(s.tls.Certificates) > 0 || s.tls.GetClientCertificate != nil {
		return configErr("TPM attestation sends no client certificate; unset Certificate and TLSConfig's certificates (an X.509 key in a TPM goes in Certificate.PrivateKey instead)")
	}
	ek := s.TPM.EndorsementKey()
	if len(ek) == 0 || len(s.TPM.StorageRootKey()) == 0 {
		return configErr("the TPM has no endorsement or storage root key")
	}
	if s.RegistrationID == "" {
		s.RegistrationID = RegistrationIDFromEK(ek)
	}
	if len(s.EKCertificateChain) > 0 && len(s.EKCertificate) == 0 {
		return configErr("EKCertificateChain without EKCertificate")
	}
	if s.SASTTL <= 0 {
		s.SASTTL = DefaultSASTTL
	}
	return nil
}

// RegistrationIDFromEK is the default registration ID of a TPM device:
// the lowercase, unpadded base32 of SHA-256 over the EK's marshalled
// TPM2B_PUBLIC, as the DPS SDKs compute it.
func RegistrationIDFromEK(ekTPM2BPublic []byte) string {
	sum := sha256.Sum256(ekTPM2BPublic)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))
}

// resolveX509 checks an X.509 Config and derives the registration ID from
// the leaf CN.
func (s *settings) resolveX509() error {
	if len(s.tls.Certificates) == 0 {
		return configErr("no X.509 client certificate (set Certificate or TLSConfig.Certificates) and no TPM")
	}
	cn, err := leafCN(&s.tls.Certificates[0])
	if err != nil {
		return configErr("%v", err)
	}
	switch {
	case s.RegistrationID == "" && cn == "":
		return configErr("the leaf certificate has no subject CN; set RegistrationID")
	case s.RegistrationID == "":
		s.RegistrationID = cn
	case cn != "" && s.RegistrationID != cn:
		return configErr("RegistrationID %q differs from the certificate CN %q; DPS requires them to be equal", s.RegistrationID, cn)
	}
	return nil
}

// leafCN is the subject CN of a TLS certificate's leaf.
func leafCN(tc *tls.Certificate) (string, error) {
	if tc.Leaf != nil {
		return tc.Leaf.Subject.CommonName, nil
	}
	if len(tc.Certificate) == 0 {
		return "", errors.New("the client certificate has no leaf")
	}
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		return "", fmt.Errorf("client certificate: %w", err)
	}
	return leaf.Subject.CommonName, nil
}
