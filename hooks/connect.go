package hooks

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/sas"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// ConnectionStater is implemented by connections that carry TLS state:
// *tls.Conn does. A listener whose net.Conn wraps TLS (a WebSocket
// connection over HTTPS) must implement it, or NetConn() net.Conn
// returning the TLS connection, for X.509 devices to be recognised on it.
type ConnectionStater interface {
	ConnectionState() tls.ConnectionState
}

// maxUnwrap bounds the NetConn chain followed to find the TLS state.
const maxUnwrap = 4

// PeerCertificates returns the certificates the client presented in the
// TLS handshake, leaf first, as sent (unverified), or nil when it sent none
// or the connection is not TLS. It looks for ConnectionStater on conn and
// on the connections conn wraps (through NetConn() net.Conn).
func PeerCertificates(conn net.Conn) []*x509.Certificate {
	var c any = conn
	for range maxUnwrap {
		if cs, ok := c.(ConnectionStater); ok {
			return cs.ConnectionState().PeerCertificates
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}

// Connect refusal codes. v5 clients get the reason byte and a reason
// string "<DPS error code> <short reason>"; 3.1.1 clients get the return
// code that means the same.
var (
	codeNotAuthorized = packets.ErrNotAuthorized     // v5 0x87, v3 5
	codeUnavailable   = packets.ErrServerUnavailable // v5 0x88, v3 3
)

// refuse sends the CONNACK for a refused connection and returns the error
// that stops it (an OnConnect error sends no CONNACK by itself).
func (h *DPS) refuse(cl *mqtt.Client, code packets.Code, reason string) error {
	send := packets.Code{Code: code.Code, Reason: reason}
	if cl.Properties.ProtocolVersion < 5 {
		switch code {
		case codeUnavailable:
			send = packets.Err3ServerUnavailable
		case packets.ErrUnsupportedProtocolVersion:
			send = packets.Err3UnsupportedProtocolVersion
		default:
			send = packets.Err3NotAuthorized
		}
	}
	if err := h.srv.SendConnack(cl, send, false, nil); err != nil {
		h.log.Debug("connack not sent", "remote", cl.Net.Remote, "error", err)
	}
	return code
}

// OnConnect authenticates the client before mochi's authentication step,
// because only here can the hook choose the CONNACK reason code. Back-end
// services are recognised by certificate (ServiceCAs) or token; a device
// must use the DPS username with this ID scope and its registration ID as
// client ID. With a client certificate, the X.509 decision is taken now:
// a refused device never reaches a topic.
func (h *DPS) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Inline {
		return nil
	}
	if cl.Properties.ProtocolVersion < 4 {
		return h.refuse(cl, packets.ErrUnsupportedProtocolVersion, "unsupported protocol version")
	}
	chain := PeerCertificates(cl.Net.Conn)
	username := string(pk.Connect.Username)
	// mochi publishes a will without any ACL check, so a will would let a
	// client publish anywhere, events included. DPS does not use wills;
	// they are dropped.
	cl.Properties.Will = mqtt.Will{}

	// A device username never names a service, so device connects skip the
	// service-CA chain check (a signature verification per CONNECT).
	deviceForm := strings.Contains(username, wire.RegistrationsPathSegment)
	if (!deviceForm && h.isServiceCert(chain)) || (username == ServiceUsername && h.validToken(pk.Connect.Password)) {
		h.sessions.add(cl, &session{kind: kindService})
		h.log.Debug("service connected", "client", cl.ID, "remote", cl.Net.Remote)
		return nil
	}
	if username == ServiceUsername {
		h.log.Warn("service login refused: wrong token", "remote", cl.Net.Remote)
		return h.refuse(cl, codeNotAuthorized, strconv.Itoa(wire.ErrorCodeUnauthorized)+" invalid service credentials")
	}

	scope, regID, _, err := wire.ParseUsername(username)
	switch {
	case err != nil:
		return h.refuseDevice(cl, chain, "", "malformed username: "+err.Error(), "malformed username")
	case !strings.EqualFold(scope, h.opts.IDScope):
		return h.refuseDevice(cl, chain, regID, "username has ID scope "+strconv.Quote(scope), "unknown ID scope")
	case provisioning.ValidateRegistrationID(regID, provisioning.MaxRegistrationIDLen) != nil:
		return h.refuseDevice(cl, chain, "", "invalid registration ID in username", "invalid registration ID")
	case cl.ID != regID:
		return h.refuseDevice(cl, chain, regID, "client ID "+strconv.Quote(cl.ID)+" differs from the username's registration ID", "client ID must equal the registration ID")
	}
	h.clampKeepalive(cl)
	// DPS sessions are not persistent whatever the client asks: nothing of
	// a session survives its connection (and CONNACK says so).
	cl.Properties.Clean = true
	cl.Properties.Props.SessionExpiryInterval = 0
	cl.Properties.Props.SessionExpiryIntervalFlag = false

	if len(chain) == 0 {
		s := &session{kind: kindUnauthenticated, registrationID: regID, regKey: provisioning.RegistrationKey(regID)}
		if len(pk.Connect.Password) > 0 {
			// Only the syntax is checked now (PROTOCOL.md §1.4): the
			// token is verified on the register request, where the
			// device gets a precise 401.
			if _, err := sas.Parse(string(pk.Connect.Password)); err != nil {
				return h.refuseDevice(cl, nil, regID, "password is not a SAS token: "+err.Error(), "malformed SAS token")
			}
			s.tpm = &tpmState{connectSAS: string(pk.Connect.Password)}
		}
		// Not authenticated yet: give the session a private client ID so
		// that it cannot take over (disconnect) the session of the device
		// it claims to be.
		cl.ID = unauthenticatedClientID(regID)
		h.sessions.add(cl, s)
		return nil
	}

	ctx, cancel := h.requestContext()
	defer cancel()
	dec, err := h.opts.Decider.Decide(ctx, chain)
	if err != nil {
		h.log.Error("x509 decision failed; refusing (fail closed)", "registrationId", regID, "remote", cl.Net.Remote, "error", err)
		return h.refuse(cl, codeUnavailable, strconv.Itoa(wire.ErrorCodeStoreUnavailable)+" service unavailable")
	}
	if dec.Outcome == x509attest.Provision && !strings.EqualFold(dec.RegistrationID, regID) {
		dec = &x509attest.Decision{
			Outcome:        x509attest.Refuse,
			RegistrationID: regID,
			Certificate:    dec.Certificate,
			Reason:         reasonCNMismatch,
			ErrorCode:      wire.ErrorCodeInvalidCertificate,
			Explanation:    "certificate CN " + strconv.Quote(dec.RegistrationID) + " differs from the registration ID " + strconv.Quote(regID) + " of the username",
		}
	}
	if dec.Outcome != x509attest.Provision {
		h.refused(regID, dec)
		return h.refuse(cl, codeNotAuthorized, refusalText(dec))
	}
	s := &session{
		kind:           kindX509,
		registrationID: regID,
		regKey:         provisioning.RegistrationKey(regID),
		chain:          chain,
		decision:       dec,
	}
	if dec.Group != nil {
		s.groupKey = strings.ToLower(dec.Group.EnrollmentGroupID)
	}
	h.sessions.add(cl, s)
	return nil
}

// reasonCNMismatch: the certificate is admitted, but for another
// registration ID than the one the device claims.
const reasonCNMismatch x509attest.Reason = "registrationIdMismatch"

// refuseDevice refuses a device that failed the identity checks before the
// X.509 decision. A refusal event is recorded when the client presented a
// certificate, so that owners see their devices fail; clients without one
// are only logged, so that anonymous clients cannot flood the event log.
func (h *DPS) refuseDevice(cl *mqtt.Client, chain []*x509.Certificate, regID, explanation, short string) error {
	h.log.Info("device connect refused", "client", cl.ID, "remote", cl.Net.Remote, "reason", explanation)
	if len(chain) > 0 {
		d := &x509attest.Decision{
			RegistrationID: regID,
			Reason:         "badIdentity",
			ErrorCode:      wire.ErrorCodeUnauthorized,
			Explanation:    explanation,
		}
		if d.RegistrationID == "" {
			d.RegistrationID = chain[0].Subject.CommonName
		}
		h.refused(d.RegistrationID, d)
	}
	return h.refuse(cl, codeNotAuthorized, strconv.Itoa(wire.ErrorCodeUnauthorized)+" "+short)
}

// refused records the refusal event of a decision.
func (h *DPS) refused(regID string, dec *x509attest.Decision) {
	ev := &provisioning.Event{
		Type:            provisioning.EventRefused,
		RegistrationID:  regID,
		DeviceID:        dec.DeviceID,
		AttestationType: provisioning.AttestationX509,
		ErrorCode:       dec.ErrorCode,
		Reason:          string(dec.Reason),
		Explanation:     dec.Explanation,
	}
	if ev.ErrorCode == 0 {
		ev.ErrorCode = wire.ErrorCodeInvalidCertificate
	}
	if dec.Group != nil {
		ev.EnrollmentGroupID = dec.Group.EnrollmentGroupID
	}
	ctx, cancel := h.requestContext()
	defer cancel()
	h.opts.Registrar.Refused(ctx, ev)
}

// refusalText is the v5 reason string of a refused decision: the DPS error
// code and a short reason. The explanation stays in logs and events: it
// describes the enrollment structure, which is not the device's business.
func refusalText(dec *x509attest.Decision) string {
	code := dec.ErrorCode
	if code == 0 {
		code = wire.ErrorCodeInvalidCertificate
	}
	return strconv.Itoa(code) + " " + shortReason(dec.Reason)
}

// shortReason is the device-facing text of a refusal reason.
func shortReason(r x509attest.Reason) string {
	if s, ok := shortReasons[r]; ok {
		return s
	}
	if r == "" {
		return "unauthorized"
	}
	return string(r)
}

var shortReasons = map[x509attest.Reason]string{
	x509attest.ReasonNoEnrollment:        "no enrollment for this certificate",
	x509attest.ReasonIndividualDisabled:  "enrollment disabled",
	x509attest.ReasonGroupDisabled:       "enrollment group disabled",
	x509attest.ReasonCertificateMismatch: "certificate does not match the enrollment",
	x509attest.ReasonExpired:             "certificate expired",
	x509attest.ReasonNotYetValid:         "certificate not yet valid",
	x509attest.ReasonLeafIsCA:            "device certificate is a CA",
	x509attest.ReasonIssuerNotCA:         "issuer is not a CA",
	x509attest.ReasonMissingClientAuth:   "certificate not valid for client authentication",
	x509attest.ReasonKeyUsage:            "certificate key usage",
	x509attest.ReasonWeakKey:             "key type or size not allowed",
	x509attest.ReasonInsecureSignature:   "insecure signature algorithm",
	x509attest.ReasonBadSignature:        "invalid certificate signature",
	x509attest.ReasonPathLength:          "path length constraint violated",
	x509attest.ReasonNameConstraints:     "name constraints violated",
	x509attest.ReasonSelfSignedLeaf:      "self-signed certificate not enrolled",
	x509attest.ReasonChainTooLong:        "certificate chain too long",
	x509attest.ReasonCertificateTooLarge: "certificate too large",
	x509attest.ReasonBadRegistrationID:   "invalid registration ID in certificate CN",
	x509attest.ReasonCriticalExtension:   "unhandled critical extension",
	x509attest.ReasonMalformed:           "malformed certificate",
	reasonCNMismatch:                     "registration ID does not match certificate CN",
}

// unauthenticatedClientID is the private client ID of an unauthenticated
// device session: unique, and not a valid registration ID (it contains
// '/'), so that it can never collide with a device's own client ID.
func unauthenticatedClientID(regID string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "unauthenticated/" + regID + "/" + hex.EncodeToString(b[:])
}

// isServiceCert reports whether chain verifies against ServiceCAs.
func (h *DPS) isServiceCert(chain []*x509.Certificate) bool {
	if h.opts.ServiceCAs == nil || len(chain) == 0 {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         h.opts.ServiceCAs,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

// validToken compares the password with ServiceToken in constant time
// (hashing first, so that the length does not leak either).
func (h *DPS) validToken(password []byte) bool {
	if h.opts.ServiceToken == "" {
		return false
	}
	want := sha256.Sum256([]byte(h.opts.ServiceToken))
	got := sha256.Sum256(password)
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1
}

// clampKeepalive imposes MaxKeepalive on devices asking for more, or for
// none; MQTT 5 clients are told through CONNACK's Server Keep Alive.
func (h *DPS) clampKeepalive(cl *mqtt.Client) {
	maxKA := uint16(h.opts.MaxKeepalive / time.Second)
	if maxKA == 0 {
		return
	}
	if cl.State.Keepalive == 0 || cl.State.Keepalive > maxKA {
		cl.State.Keepalive = maxKA
		cl.State.ServerKeepalive = true
	}
}

// OnConnectAuthenticate admits exactly the clients OnConnect accepted.
// mochi ORs authentication hooks: adding another one that admits clients
// (auth.AllowHook) would let clients in that this hook knows nothing of;
// they get no topic access from this hook either.
func (h *DPS) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	return h.sessions.get(cl) != nil
}

// OnSessionEstablished runs after CONNACK. A session revoked while its
// CONNECT was in flight (its entry was disabled) is disconnected now.
func (h *DPS) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if s, revoked := h.sessions.establish(cl); s != nil && revoked {
		_ = h.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
	}
}

// OnDisconnect forgets the session.
func (h *DPS) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.sessions.remove(cl)
}

// OnPacketEncode completes CONNACK: it announces the maximum packet size
// (mochi enforces it without saying so) and, for devices, always clears
// session-present (DPS sessions are not persistent; C# v1 fails on 1).
func (h *DPS) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		return pk
	}
	if max := h.srv.Options.Capabilities.MaximumPacketSize; max > 0 {
		pk.Properties.MaximumPacketSize = max
	}
	if s := h.sessions.get(cl); s != nil && s.kind.device() {
		pk.SessionPresent = false
	}
	return pk
}
