// Package baseline is the reference every dpsload figure is a ratio
// against: plain mochi-mqtt with the same TLS as dpsbroker and no
// provisioning. A device connects, subscribes to the DPS response filter,
// sends one register request and receives one final 200 answer, written
// to its connection alone the way the DPS hook writes it. What the real
// broker costs beyond this (the X.509 decision, the store, the second
// round trip of the 202-then-poll flow, events) is the price of
// provisioning.
package baseline

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// Key exchange names, as dpsbroker's key-exchange setting spells them.
const (
	KexDefault = "default"
	KexX25519  = "x25519"
	KexP256    = "p256"
)

// TLSConfig is the device-facing TLS of the baseline. Unlike dpsbroker,
// which requests a certificate and verifies the chain in its connect hook
// (to answer with a DPS reason code), the baseline makes Go verify the
// chain against clientCAs during the handshake: the same signature work,
// done by the standard library, with no enrollment lookup.
func TLSConfig(cert tls.Certificate, clientCAs *x509.CertPool, kex string, tickets bool) (*tls.Config, error) {
	cfg := &tls.Config{
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              clientCAs,
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: !tickets,
	}
	switch kex {
	case "", KexDefault:
	case KexX25519:
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	case KexP256:
		cfg.CurvePreferences = []tls.CurveID{tls.CurveP256}
	default:
		return nil, fmt.Errorf("baseline: unknown key exchange %q (default, x25519, p256)", kex)
	}
	return cfg, nil
}

// Server is a running baseline broker.
type Server struct {
	srv      *mqtt.Server
	addr     string
	answered atomic.Int64
}

// Start listens on addr (for example "127.0.0.1:0") with tlsCfg and serves
// until Close. logger nil discards mochi's logs.
func Start(addr string, tlsCfg *tls.Config, logger *slog.Logger) (*Server, error) {
	if tlsCfg == nil {
		return nil, errors.New("baseline: a TLS configuration is required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	s := &Server{addr: ln.Addr().String()}
	s.srv = mqtt.New(&mqtt.Options{Logger: logger})
	h := &hook{s: s, srv: s.srv, body: assignedBody()}
	if err := s.srv.AddHook(h, nil); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("baseline: %w", err)
	}
	if err := s.srv.AddListener(listeners.NewNet("baseline", tls.NewListener(ln, tlsCfg))); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("baseline: %w", err)
	}
	if err := s.srv.Serve(); err != nil {
		_ = s.srv.Close()
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return s, nil
}

// Addr is the bound listener address.
func (s *Server) Addr() string { return s.addr }

// Answered is the number of requests answered so far.
func (s *Server) Answered() int64 { return s.answered.Load() }

// Close stops the broker and closes every connection.
func (s *Server) Close() error { return s.srv.Close() }

// assignedBody is a final answer of the size dpsbroker sends for a group
// device, so that both brokers write about as many bytes.
func assignedBody() []byte {
	now := wire.NewTime(time.Now())
	b, _ := json.Marshal(&wire.RegistrationOperationStatus{
		OperationID: "5.0000000000000000.00000000-0000-0000-0000-000000000000",
		Status:      wire.StatusAssigned,
		RegistrationState: &wire.DeviceRegistrationResult{
			RegistrationID:         "baseline",
			CreatedDateTimeUTC:     now,
			LastUpdatedDateTimeUTC: now,
			AssignedHub:            "hub-1.example.net",
			DeviceID:               "baseline",
			Status:                 wire.StatusAssigned,
			Substatus:              wire.SubstatusInitialAssignment,
			ETag:                   "IjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMCI=",
		},
	})
	return b
}

// hook admits every client the TLS layer admitted, allows every topic, and
// answers each DPS request with one final 200.
type hook struct {
	mqtt.HookBase
	s    *Server
	srv  *mqtt.Server
	body []byte
}

func (h *hook) ID() string { return "dpsload-baseline" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnPublished}, []byte{b})
}

func (h *hook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *hook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// OnPublish consumes device requests: acknowledged, never routed.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !strings.HasPrefix(pk.TopicName, wire.RequestTopicPrefix) {
		return pk, nil
	}
	return pk, packets.CodeSuccessIgnore
}

// OnPublished answers after mochi wrote the PUBACK, on the device's read
// goroutine, as the DPS hook does.
func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || !strings.HasPrefix(pk.TopicName, wire.RequestTopicPrefix) {
		return
	}
	rid := ""
	if _, q, ok := strings.Cut(pk.TopicName, "?"); ok {
		for _, kv := range strings.Split(q, "&") {
			if v, ok := strings.CutPrefix(kv, wire.ParamRID+"="); ok {
				rid = v
			}
		}
	}
	topic := wire.AppendResponseTopic(make([]byte, 0, 96+len(rid)), 200, rid, 0)
	if deliver(h.srv, cl, string(topic), h.body) == nil {
		h.s.answered.Add(1)
	}
}

// deliver writes one PUBLISH to cl alone: QoS capped by its subscription
// to the response filter and by 1, tracked in the inflight store at QoS 1
// so that the device's PUBACK clears it. It is dpsbroker's delivery path,
// so that the baseline pays for the same packet work.
func deliver(srv *mqtt.Server, cl *mqtt.Client, topic string, body []byte) error {
	sub, ok := cl.State.Subscriptions.Get(wire.ResponseFilter)
	if !ok {
		return errors.New("not subscribed")
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: min(sub.Qos, 1)},
		TopicName:   topic,
		Payload:     body,
		Created:     time.Now().Unix(),
	}
	if out.FixedHeader.Qos > 0 {
		if cl.State.Inflight.Len() >= int(srv.Options.Capabilities.MaximumInflight) {
			return packets.ErrQuotaExceeded
		}
		id, err := cl.NextPacketID()
		if err != nil {
			return err
		}
		out.PacketID = uint16(id)
		if cl.State.Inflight.Set(out) {
			atomic.AddInt64(&srv.Info.Inflight, 1)
			cl.State.Inflight.DecreaseSendQuota()
		}
	}
	if err := cl.WritePacket(out); err != nil {
		if out.FixedHeader.Qos > 0 && cl.State.Inflight.Delete(out.PacketID) {
			atomic.AddInt64(&srv.Info.Inflight, -1)
			cl.State.Inflight.IncreaseSendQuota()
		}
		return err
	}
	return nil
}
