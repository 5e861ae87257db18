package device_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestProvisionAssigned walks the whole happy path: register, 202, two
// polls, 200 assigned, and checks every detail of what the device sent.
func TestProvisionAssigned(t *testing.T) {
	b := newTestBroker(t, func(n int, req wire.Request, _ []byte) []reply {
		switch n {
		case 0, 1:
			return []reply{{status: 202, body: assigningBody}} // no retry-after: PollInterval
		default:
			return []reply{{status: 200, body: assignedBody("dev-1")}}
		}
	})
	cfg := b.config(t, "dev-1")
	cfg.Payload = json.RawMessage(`{"model":"x1"}`)
	res, err := device.Provision(testContext(t), cfg)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if res.AssignedHub != "hub-1.example.net" || res.DeviceID != "dev-1" || res.Status != wire.StatusAssigned ||
		res.X509 == nil || res.X509.EnrollmentGroupID != "factory" {
		t.Errorf("result = %+v", res)
	}

	got := b.r.snapshot()
	if got.clientID != "dev-1" || got.peerCN != "dev-1" {
		t.Errorf("client ID %q, peer CN %q; want dev-1", got.clientID, got.peerCN)
	}
	scope, regID, q, err := wire.ParseUsername(got.username)
	if err != nil || scope != "0ne00TEST" || regID != "dev-1" || q.Get("api-version") != wire.DefaultAPIVersion {
		t.Errorf("username %q: scope %q id %q query %v err %v", got.username, scope, regID, q, err)
	}
	if len(got.requests) != 3 {
		t.Fatalf("%d requests, want 3", len(got.requests))
	}
	reg, err := wire.DecodeRegisterRequest(got.requests[0].body)
	if err != nil || got.requests[0].req.Kind != wire.RequestRegister || reg.RegistrationID != "dev-1" ||
		string(reg.Payload) != `{"model":"x1"}` {
		t.Errorf("register request %+v body %s: %v", got.requests[0].req, got.requests[0].body, err)
	}
	rids := map[string]bool{}
	for i, r := range got.requests {
		if rids[r.req.RID] {
			t.Errorf("request %d reuses $rid %q", i, r.req.RID)
		}
		rids[r.req.RID] = true
		if i > 0 && (r.req.Kind != wire.RequestPollOperation || r.req.OperationID != "op-1") {
			t.Errorf("request %d = %+v, want a poll of op-1", i, r.req)
		}
	}
	waitFor(t, func() bool { s := b.r.snapshot(); return s.unsubscribed && s.disconnects == 1 })
}

// TestProvisionOutcomes covers the answers that end a run at once or
// after retries, table-driven on the script.
func TestProvisionOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		script   script
		attempts int // MaxAttempts, 0 for the default
		requests int // how many requests the broker must have seen
		check    func(t *testing.T, res *wire.DeviceRegistrationResult, err error)
	}{
		{
			name: "200 on register",
			script: func(int, wire.Request, []byte) []reply {
				return []reply{{status: 200, body: assignedBody("dev-1")}}
			},
			requests: 1,
			check:    wantAssigned,
		},
		{
			name: "429 with retry-after then assigned",
			script: func(n int, _ wire.Request, _ []byte) []reply {
				if n == 0 {
					return []reply{{status: 429, retryAfter: 1, body: errorBody(429001, "slow down")}}
				}
				return []reply{{status: 200, body: assignedBody("dev-1")}}
			},
			requests: 2,
			check:    wantAssigned,
		},
		{
			name: "503 without retry-after on a poll then assigned",
			script: func(n int, _ wire.Request, _ []byte) []reply {
				switch n {
				case 0:
					return []reply{{status: 202, body: assigningBody}}
				case 1, 2:
					return []reply{{status: 503, body: errorBody(503000, "store unavailable")}}
				}
				return []reply{{status: 200, body: assignedBody("dev-1")}}
			},
			requests: 4,
			check:    wantAssigned,
		},
		{
			name: "429 until MaxAttempts",
			script: func(int, wire.Request, []byte) []reply {
				return []reply{{status: 500, body: errorBody(500000, "boom")}}
			},
			attempts: 3,
			requests: 3,
			check: func(t *testing.T, _ *wire.DeviceRegistrationResult, err error) {
				var e *device.Error
				if !errors.As(err, &e) || e.Status != 500 || !e.Temporary() || e.Details.ErrorCode != 500000 {
					t.Fatalf("err = %v, want a temporary *Error 500", err)
				}
				if !strings.Contains(err.Error(), "giving up after 3 attempts") {
					t.Errorf("err = %q, want the attempt count", err)
				}
			},
		},
		{
			name: "401 invalid certificate",
			script: func(int, wire.Request, []byte) []reply {
				return []reply{{status: 401, body: errorBody(401002, "Invalid certificate")}}
			},
			requests: 1,
			check:    wantError(401, 401002, "Invalid certificate"),
		},
		{
			name: "400 on a poll",
			script: func(n int, _ wire.Request, _ []byte) []reply {
				if n == 0 {
					return []reply{{status: 202, retryAfter: 0, body: assigningBody}}
				}
				return []reply{{status: 404, body: errorBody(404203, "operation not found")}}
			},
			requests: 2,
			check:    wantError(404, 404203, "operation not found"),
		},
		{
			name: "error body without errorCode",
			script: func(int, wire.Request, []byte) []reply {
				return []reply{{status: 401, body: `{"authenticationKey":"AAAA","keyName":"registration"}`}}
			},
			requests: 1,
			check: func(t *testing.T, _ *wire.DeviceRegistrationResult, err error) {
				var e *device.Error
				if !errors.As(err, &e) || e.Status != 401 || e.ErrorCode() != 401000 {
					t.Fatalf("err = %v, want *Error 401 with code 401000", err)
				}
			},
		},
		{
			name: "failed",
			script: func(n int, _ wire.Request, _ []byte) []reply {
				if n == 0 {
					return []reply{{status: 202, body: assigningBody}}
				}
				return []reply{{status: 200, body: `{"operationId":"op-1","status":"failed","registrationState":` +
					`{"registrationId":"dev-1","status":"failed","errorCode":400207,"errorMessage":"Custom allocation failed with status code: 500"}}`}}
			},
			requests: 2,
			check: func(t *testing.T, _ *wire.DeviceRegistrationResult, err error) {
				var e *device.RegistrationError
				if !errors.As(err, &e) || e.Status != wire.StatusFailed || e.ErrorCode != 400207 || e.OperationID != "op-1" ||
					!strings.Contains(e.Message, "Custom allocation") || device.ErrorCode(err) != 400207 {
					t.Fatalf("err = %v (%#v), want a failed *RegistrationError 400207", err, e)
				}
			},
		},
		{
			name: "disabled",
			script: func(int, wire.Request, []byte) []reply {
				return []reply{{status: 200, body: `{"operationId":"op-1","status":"disabled"}`}}
			},
			requests: 1,
			check: func(t *testing.T, _ *wire.DeviceRegistrationResult, err error) {
				var e *device.RegistrationError
				if !errors.As(err, &e) || e.Status != wire.StatusDisabled {
					t.Fatalf("err = %v, want a disabled *RegistrationError", err)
				}
			},
		},
		{
			name: "assigning without operationId",
			script: func(int, wire.Request, []byte) []reply {
				return []reply{{status: 202, body: `{"status":"assigning"}`}}
			},
			requests: 1,
			check: func(t *testing.T, _ *wire.DeviceRegistrationResult, err error) {
				if err == nil || !strings.Contains(err.Error(), "operationId") {
					t.Fatalf("err = %v, want a complaint about operationId", err)
				}
			},
		},
		{
			name: "assigned without registrationState",
			script: func(int, wire.Request, []byte) []reply {
				return []reply{{status: 200, body: `{"operationId":"op-1","status":"assigned"}`}}
			},
			requests: 1,
			check: func(t *testing.T, _ *wire.DeviceRegistrationResult, err error) {
				if err == nil || !strings.Contains(err.Error(), "registrationState") {
					t.Fatalf("err = %v, want a complaint about registrationState", err)
				}
			},
		},
		{
			// Responses for other $rids, including a stale answer to the
			// register request while a poll is in flight, are ignored.
			name: "responses for other $rids ignored",
			script: func() script {
				var registerRID string
				return func(n int, req wire.Request, _ []byte) []reply {
					if n == 0 {
						registerRID = req.RID
						return []reply{
							{status: 401, rid: "someone-else", body: errorBody(401002, "not for you")},
							{status: 202, body: assigningBody},
						}
					}
					return []reply{
						{status: 200, rid: registerRID, body: `{"operationId":"op-1","status":"disabled"}`},
						{status: 200, rid: "1", body: `{"operationId":"op-1","status":"failed"}`},
						{status: 200, body: assignedBody("dev-1")},
					}
				}
			}(),
			requests: 2,
			check:    wantAssigned,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newTestBroker(t, tt.script)
			cfg := b.config(t, "dev-1")
			cfg.MaxAttempts = tt.attempts
			res, err := device.Provision(testContext(t), cfg)
			tt.check(t, res, err)
			if got := len(b.r.snapshot().requests); got != tt.requests {
				t.Errorf("broker saw %d requests, want %d", got, tt.requests)
			}
			waitFor(t, func() bool { return b.r.snapshot().disconnects == 1 })
		})
	}
}

func wantAssigned(t *testing.T, res *wire.DeviceRegistrationResult, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if res.Status != wire.StatusAssigned || res.AssignedHub == "" {
		t.Fatalf("result = %+v, want assigned", res)
	}
}

func wantError(status, code int, msg string) func(*testing.T, *wire.DeviceRegistrationResult, error) {
	return func(t *testing.T, _ *wire.DeviceRegistrationResult, err error) {
		t.Helper()
		var e *device.Error
		if !errors.As(err, &e) {
			t.Fatalf("err = %v (%T), want *device.Error", err, err)
		}
		if e.Status != status || e.Details.ErrorCode != code || e.Details.Message != msg || e.Temporary() ||
			device.ErrorCode(err) != code || e.Details.TrackingID != "trk-1" {
			t.Errorf("err = %#v", e)
		}
		if !strings.Contains(err.Error(), strings.TrimSpace(msg)) {
			t.Errorf("message %q does not carry %q", err, msg)
		}
	}
}

func TestProvisionConnackRefused(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply { return nil })
	b.r.refuseNext(packets.Code{Code: packets.ErrNotAuthorized.Code, Reason: "401002 enrollment group disabled"})
	_, err := device.Provision(testContext(t), b.config(t, "dev-1"))
	var ce *device.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v (%T), want *device.ConnectError", err, err)
	}
	if ce.ReasonCode != 0x87 || ce.Reason != "401002 enrollment group disabled" || ce.ErrorCode() != 401002 ||
		device.ErrorCode(err) != 401002 || ce.Temporary() {
		t.Errorf("ConnectError = %#v", ce)
	}
	if !strings.Contains(err.Error(), "not authorized") || !strings.Contains(err.Error(), "401002") {
		t.Errorf("message %q", err)
	}
	if got := b.r.snapshot().connects; got != 1 {
		t.Errorf("%d connects, want 1 (a refusal is final)", got)
	}
}

// A busy broker is tried again, within MaxAttempts.
func TestProvisionConnackBusyRetried(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply {
		return []reply{{status: 200, body: assignedBody("dev-1")}}
	})
	b.r.refuseNext(packets.ErrServerBusy, packets.ErrServerUnavailable)
	res, err := device.Provision(testContext(t), b.config(t, "dev-1"))
	wantAssigned(t, res, err)
	if got := b.r.snapshot().connects; got != 3 {
		t.Errorf("%d connects, want 3", got)
	}
}

func TestProvisionContextCanceled(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply { return nil }) // never answers
	seen := b.r.watch()
	ctx, cancel := context.WithCancel(testContext(t))
	errc := provisionAsync(ctx, b.config(t, "dev-1"))
	<-seen
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitFor(t, func() bool { return b.r.snapshot().disconnects == 1 })
}

// The broker's retry-after is honoured while the context runs out: the
// client waits instead of polling early.
func TestProvisionDeadlineDuringRetryAfter(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply {
		return []reply{{status: 202, retryAfter: 3600, body: assigningBody}}
	})
	seen := b.r.watch()
	ctx, cancel := context.WithCancel(testContext(t))
	errc := provisionAsync(ctx, b.config(t, "dev-1"))
	<-seen
	// Let the response arrive and the wait begin; whether it has yet does
	// not matter, the poll must not come before the hour is up.
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got := len(b.r.snapshot().requests); got != 1 {
		t.Errorf("%d requests, want 1 (no early poll)", got)
	}
}

func TestProvisionServerDisconnect(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply { return nil })
	seen := b.r.watch()
	errc := provisionAsync(testContext(t), b.config(t, "dev-1"))
	<-seen
	cl, ok := b.r.srv.Clients.Get("dev-1")
	if !ok {
		t.Fatal("device not connected")
	}
	_ = b.r.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
	if err := <-errc; !errors.Is(err, device.ErrConnectionLost) {
		t.Fatalf("err = %v, want ErrConnectionLost", err)
	}
}

func TestProvisionDialFails(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply { return nil })
	cfg := b.config(t, "dev-1")
	cfg.Broker = freePort(t)
	_, err := device.Provision(testContext(t), cfg)
	if err == nil || !strings.Contains(err.Error(), "dial") {
		t.Fatalf("err = %v, want a dial error", err)
	}
}

func TestProvisionUntrustedServer(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply { return nil })
	cfg := b.config(t, "dev-1")
	cfg.TLSConfig = nil // system roots do not know the test CA
	_, err := device.Provision(testContext(t), cfg)
	if err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Fatalf("err = %v, want a TLS handshake error", err)
	}
}

func TestConfigErrors(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply { return nil })
	tests := []struct {
		name string
		edit func(*device.Config)
		want string
	}{
		{"no broker", func(c *device.Config) { c.Broker = "" }, "Broker"},
		{"broker without port", func(c *device.Config) { c.Broker = "localhost" }, "Broker"},
		{"no scope", func(c *device.Config) { c.IDScope = "" }, "IDScope"},
		{"bad payload", func(c *device.Config) { c.Payload = json.RawMessage(`{`) }, "Payload"},
		{"no certificate", func(c *device.Config) { c.Certificate = nil }, "certificate"},
		{"registration ID differs from CN", func(c *device.Config) { c.RegistrationID = "dev-2" }, "differs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := b.config(t, "dev-1")
			tt.edit(&cfg)
			_, err := device.Provision(testContext(t), cfg)
			if !errors.Is(err, device.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
	if n := b.r.snapshot().connects; n != 0 {
		t.Errorf("%d connects; a bad config must fail before dialing", n)
	}
}

// waitFor polls cond: the broker records a disconnect on its own
// goroutine, after the client has returned.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// provisionAsync runs Provision in the background; the channel delivers
// its error.
func provisionAsync(ctx context.Context, cfg device.Config) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := device.Provision(ctx, cfg)
		errc <- err
	}()
	return errc
}
