package device

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
)

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
	if len(s.tls.Certificates) == 0 {
		return nil, configErr("no X.509 client certificate (set Certificate or TLSConfig.Certificates)")
	}
	cn, err := leafCN(&s.tls.Certificates[0])
	if err != nil {
		return nil, configErr("%v", err)
	}
	switch {
	case s.RegistrationID == "" && cn == "":
		return nil, configErr("the leaf certificate has no subject CN; set RegistrationID")
	case s.RegistrationID == "":
		s.RegistrationID = cn
	case cn != "" && s.RegistrationID != cn:
		return nil, configErr("RegistrationID %q differs from the certificate CN %q; DPS requires them to be equal", s.RegistrationID, cn)
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
