package hooks

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest/tpmdecide"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// X509Decider takes the X.509 decision for a presented chain (leaf first).
// *x509attest.Evaluator satisfies it. An error means the decision could
// not be taken (store down): the hook then fails closed.
type X509Decider interface {
	Decide(ctx context.Context, chain []*x509.Certificate) (*x509attest.Decision, error)
}

// TPMAttester takes both legs of TPM attestation (DESIGN.md §5).
// *tpmdecide.Attester satisfies it. Refusals are Decisions; an error means
// the store failed, and the hook answers 503.
type TPMAttester interface {
	// Challenge decides the enrollment and issues a challenge (first leg).
	Challenge(ctx context.Context, registrationID string, t *wire.TPMAttestation) (*tpmdecide.Decision, error)
	// Answer consumes the pending challenge and verifies the SAS token
	// signed with the imported key (second leg).
	Answer(ctx context.Context, idScope, registrationID string, t *wire.TPMAttestation, sasToken string) (*tpmdecide.Decision, error)
}

// Registrar registers admitted devices and records refusals.
// *provisioning.Service satisfies it.
type Registrar interface {
	Register(ctx context.Context, adm *provisioning.Admission, payload json.RawMessage) (*provisioning.Operation, error)
	// Operation returns an error wrapping provisioning.ErrNotFound for an
	// operation that is missing, expired or another device's.
	Operation(ctx context.Context, registrationID, operationID string) (*provisioning.Operation, error)
	Refused(ctx context.Context, ev *provisioning.Event)
}

// Defaults of zero Options fields.
const (
	// DefaultRetryAfter is the retry-after of every 202 and 429: real DPS
	// sends 3 s, which passes every SDK's clamp.
	DefaultRetryAfter = wire.DefaultRetryAfter * time.Second
	// DefaultMinPollInterval and DefaultPollBurst give the Azure limit of
	// 5 status polls per 10 s per device.
	DefaultMinPollInterval = 2 * time.Second
	DefaultPollBurst       = 5
	// DefaultMaxPacketSize admits a register body of wire.MaxRequestBody
	// (96 KiB, the DPS message limit) plus its topic and properties, so
	// that a body just over the limit is answered with a 400 rather than
	// a dropped connection.
	DefaultMaxPacketSize = wire.MaxRequestBody + 4096
	// DefaultRequestTimeout bounds the store work of one request or one
	// connect decision.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultMaxKeepalive caps the keepalive a device may ask for, and is
	// imposed on devices that ask for none (the C SDK sends 0): without it
	// a silent half-open connection would be held forever.
	DefaultMaxKeepalive = 5 * time.Minute
)

// ServiceUsername is the CONNECT username of a back-end service that
// authenticates with Options.ServiceToken.
const ServiceUsername = "service"

// Options configure the DPS hook.
type Options struct {
	// IDScope is this broker's ID scope; device usernames must carry it.
	IDScope string
	// Decider takes the X.509 decision (required).
	Decider X509Decider
	// Registrar registers devices and records refusals (required).
	Registrar Registrar
	// TPM takes TPM attestations of devices that connect without a client
	// certificate; nil answers their register requests 401000.
	TPM TPMAttester
	// RetryAfter is sent on every 202 and 429 (DefaultRetryAfter; whole
	// seconds, at least 1).
	RetryAfter time.Duration
	// MinPollInterval and PollBurst limit each device session's status
	// polls, and separately its register requests, with a token bucket:
	// PollBurst requests at once, then one per MinPollInterval. Beyond
	// that the device gets 429 with retry-after.
	MinPollInterval time.Duration
	PollBurst       int
	// MaxPacketSize is the largest MQTT packet a client may send
	// (DefaultMaxPacketSize). New lowers the server's
	// Capabilities.MaximumPacketSize to it and CONNACK (v5) announces it.
	MaxPacketSize int
	// RequestTimeout bounds the store work of one request
	// (DefaultRequestTimeout).
	RequestTimeout time.Duration
	// MaxKeepalive caps device keepalives (DefaultMaxKeepalive).
	MaxKeepalive time.Duration
	// FastPath answers a register request whose operation is already
	// final with 200 and the final RegistrationOperationStatus, instead
	// of 202 and a poll after retry-after: provisioning then takes one
	// round trip instead of seconds. The C, embedded C, Node, Python, Java
	// and C# v1 SDKs accept that; the C# v2 (MQTTnet) SDK fails when the
	// register answer is not "assigning", so it is off by default. See
	// FastPath in the package documentation.
	FastPath bool
	// ServiceCAs: a client whose certificate verifies against these roots
	// (with clientAuth) is a back-end service, never a device. Use a CA of
	// its own, that issues no device certificates.
	ServiceCAs *x509.CertPool
	// ServiceToken, when set, lets a client with username ServiceUsername
	// and this password in as a service (compared in constant time).
	ServiceToken string
	Logger       *slog.Logger
}

// DPS is the mochi hook that turns a broker into a device provisioning
// service: connect authentication, the topic ACL, the DPS request handler
// and event publication. Create it with New and add it with
// srv.AddHook(h, nil). It is safe for concurrent use.
type DPS struct {
	mqtt.HookBase

	srv      *mqtt.Server
	opts     Options
	log      *slog.Logger
	sessions *registry
	// retryAfter is Options.RetryAfter in whole seconds.
	retryAfter int
}

// New checks opts and returns the hook. It also tightens srv's
// capabilities: the maximum packet size is lowered to MaxPacketSize, MQTT
// 3.0/3.1 are refused (MinimumProtocolVersion 4), and acks no longer echo
// the request's properties. srv must have InlineClient enabled, because
// events are published through it.
func New(srv *mqtt.Server, opts Options) (*DPS, error) {
	if srv == nil {
		return nil, errors.New("hooks: New: nil server")
	}
	var problems []string
	if opts.IDScope == "" || strings.ContainsAny(opts.IDScope, "/+#") {
		problems = append(problems, fmt.Sprintf("IDScope %q must be non-empty and free of / + #", opts.IDScope))
	}
	if opts.Decider == nil {
		problems = append(problems, "Decider is required")
	}
	if opts.Registrar == nil {
		problems = append(problems, "Registrar is required")
	}
	if !srv.Options.InlineClient {
		problems = append(problems, "the server needs Options.InlineClient = true to publish events")
	}
	for name, d := range map[string]time.Duration{
		"RetryAfter": opts.RetryAfter, "MinPollInterval": opts.MinPollInterval,
		"RequestTimeout": opts.RequestTimeout, "MaxKeepalive": opts.MaxKeepalive,
	} {
		if d < 0 {
			problems = append(problems, fmt.Sprintf("%s is negative", name))
		}
	}
	if opts.PollBurst < 0 || opts.MaxPacketSize < 0 {
		problems = append(problems, "PollBurst and MaxPacketSize must not be negative")
	}
	if opts.MaxKeepalive > 65535*time.Second {
		problems = append(problems, "MaxKeepalive exceeds the MQTT maximum of 65535 s")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("hooks: New: %s", strings.Join(problems, "; "))
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	if opts.MinPollInterval == 0 {
		opts.MinPollInterval = DefaultMinPollInterval
	}
	if opts.PollBurst == 0 {
		opts.PollBurst = DefaultPollBurst
	}
	if opts.MaxPacketSize == 0 {
		opts.MaxPacketSize = DefaultMaxPacketSize
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.MaxKeepalive == 0 {
		opts.MaxKeepalive = DefaultMaxKeepalive
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ra := int((opts.RetryAfter + time.Second - 1) / time.Second)

	caps := srv.Options.Capabilities
	if caps.MaximumPacketSize == 0 || caps.MaximumPacketSize > uint32(opts.MaxPacketSize) {
		caps.MaximumPacketSize = uint32(opts.MaxPacketSize)
	}
	if caps.MinimumProtocolVersion < 4 {
		caps.MinimumProtocolVersion = 4
	}
	caps.Compatibilities.NoInheritedPropertiesOnAck = true

	return &DPS{
		srv:        srv,
		opts:       opts,
		log:        opts.Logger,
		sessions:   newRegistry(),
		retryAfter: ra,
	}, nil
}

// ID names the hook in mochi's logs.
func (h *DPS) ID() string { return "dpsbroker" }

// Provides lists the mochi events the hook handles.
func (h *DPS) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnACLCheck,
		mqtt.OnSubscribe,
		mqtt.OnPublish,
		mqtt.OnPublished,
		mqtt.OnPacketEncode,
	}, []byte{b})
}

// requestContext bounds one request's store work.
func (h *DPS) requestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.opts.RequestTimeout)
}
