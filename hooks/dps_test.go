package hooks_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/dpsbroker/dpsbroker/hooks"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

func thumbprint(leaf *pkitest.Leaf) string {
	s := sha256.Sum256(leaf.Cert.Raw)
	return strings.ToUpper(hex.EncodeToString(s[:]))
}

// checkAssigned checks a final status against what the device should get.
func checkAssigned(t *testing.T, st *wire.RegistrationOperationStatus, leaf *pkitest.Leaf, groupID string) {
	t.Helper()
	rs := st.RegistrationState
	id := leaf.Cert.Subject.CommonName
	switch {
	case st.Status != wire.StatusAssigned || rs == nil:
		t.Fatalf("%s: status %q, state %+v", id, st.Status, rs)
	case rs.Status != wire.StatusAssigned || rs.RegistrationID != id || rs.DeviceID != id:
		t.Fatalf("%s: registration state %+v", id, rs)
	case !slices.Contains(testHubs, rs.AssignedHub):
		t.Fatalf("%s: assigned hub %q is not linked", id, rs.AssignedHub)
	case rs.X509 == nil || rs.X509.CertificateInfo == nil || rs.X509.CertificateInfo.SHA256Thumbprint != thumbprint(leaf):
		t.Fatalf("%s: x509 %+v", id, rs.X509)
	case rs.X509.EnrollmentGroupID != groupID:
		t.Fatalf("%s: enrollmentGroupId %q, want %q", id, rs.X509.EnrollmentGroupID, groupID)
	case rs.CreatedDateTimeUTC.IsZero() || rs.LastUpdatedDateTimeUTC.IsZero() || rs.ETag == "":
		t.Fatalf("%s: timestamps or etag missing: %+v", id, rs)
	}
}

// refusedV5 connects over MQTT 5 and expects CONNACK code with reason.
func (e *env) refusedV5(leaf *pkitest.Leaf, clientID, user string, code byte, reasonPrefix string) {
	e.t.Helper()
	_, ca, err := e.dialV5(leaf, clientID, user)
	if err == nil {
		e.t.Fatalf("v5 connect %q as %q: accepted, want 0x%02x", clientID, user, code)
	}
	if ca == nil || ca.ReasonCode != code {
		e.t.Fatalf("v5 connect %q: %v, connack %+v; want 0x%02x", clientID, err, ca, code)
	}
	if ca.Properties == nil || !strings.HasPrefix(ca.Properties.ReasonString, reasonPrefix) {
		e.t.Fatalf("v5 connect %q: reason string %+v, want prefix %q", clientID, ca.Properties, reasonPrefix)
	}
}

// refusedV3 connects over MQTT 3.1.1 and expects return code rc.
func (e *env) refusedV3(leaf *pkitest.Leaf, clientID, user string, rc byte) {
	e.t.Helper()
	_, got, err := e.dialV3(leaf, clientID, user, true)
	if err == nil || got != rc {
		e.t.Fatalf("3.1.1 connect %q: rc %d err %v, want rc %d", clientID, got, err, rc)
	}
}

// TestSeedStory is the seed scenario at the hooks level: root -> A ->
// devices 1-3, root -> B -> devices 4-5. Enable the root, then disable B,
// then disable device 3; live sessions follow each change.
func TestSeedStory(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var leaves []*pkitest.Leaf
	for i := 1; i <= 5; i++ {
		ca := e.interA
		if i >= 4 {
			ca = e.interB
		}
		leaves = append(leaves, ca.Leaf(t, fmt.Sprintf("device-%d", i)))
	}
	connect := func(i int) device {
		if i%2 == 1 {
			return e.deviceV3(leaves[i])
		}
		return e.deviceV5(leaves[i])
	}

	// 1. The root is enrolled: every device provisions (v5 and 3.1.1).
	e.putGroup("root-group", e.root, provisioning.StatusEnabled)
	hubs := map[string]string{}
	for i, leaf := range leaves {
		d := connect(i)
		st := provision(t, d, leaf.Cert.Subject.CommonName, 1)
		checkAssigned(t, st, leaf, "root-group")
		hubs[leaf.Cert.Subject.CommonName] = st.RegistrationState.AssignedHub
		d.close()
	}

	// Registering again keeps the hub.
	d1 := connect(0)
	if st := provision(t, d1, "device-1", 1); st.RegistrationState.AssignedHub != hubs["device-1"] {
		t.Fatalf("re-registration moved device-1 from %s to %s", hubs["device-1"], st.RegistrationState.AssignedHub)
	}
	d1.close()

	// 2. Group B, disabled, references intermediate B: it is found before
	// the root when walking up from device 4's issuer.
	live4 := e.deviceV5(leaves[3])
	e.putGroup("group-b", e.interB, provisioning.StatusDisabled)
	if n := e.dps.Recheck(ctx); n != 1 {
		t.Fatalf("Recheck disconnected %d sessions, want 1 (device-4)", n)
	}
	select {
	case dc := <-live4.down:
		if dc.ReasonCode != 0x98 {
			t.Fatalf("device-4 disconnected with 0x%02x, want 0x98", dc.ReasonCode)
		}
	case <-time.After(waitTimeout):
		t.Fatal("device-4 was not disconnected")
	}
	e.refusedV5(leaves[3], "device-4", username("device-4"), 0x87, "401002 enrollment group disabled")
	e.refusedV3(leaves[4], "device-5", username("device-5"), 5)
	for i := 0; i < 3; i++ {
		d := connect(i)
		checkAssigned(t, provision(t, d, leaves[i].Cert.Subject.CommonName, 1), leaves[i], "root-group")
		d.close()
	}

	// 3. Device 3 gets a disabled individual enrollment: it alone decides.
	live3 := e.deviceV5(leaves[2])
	e.putEnrollment(leaves[2], provisioning.StatusDisabled)
	if n := e.dps.DisconnectRegistration("DEVICE-3"); n != 1 {
		t.Fatalf("DisconnectRegistration: %d sessions, want 1", n)
	}
	select {
	case <-live3.down:
	case <-time.After(waitTimeout):
		t.Fatal("device-3 was not disconnected")
	}
	e.refusedV5(leaves[2], "device-3", username("device-3"), 0x87, "401002 enrollment disabled")
	e.refusedV3(leaves[2], "device-3", username("device-3"), 5)
	for i := 0; i < 2; i++ {
		d := connect(i)
		checkAssigned(t, provision(t, d, leaves[i].Cert.Subject.CommonName, 1), leaves[i], "root-group")
		d.close()
	}

	// The event log tells the story.
	events, err := e.store.ReadEvents(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range events {
		count[string(ev.Type)+" "+ev.RegistrationID]++
	}
	want := map[string]int{
		"assigned device-1": 4, "assigned device-2": 3, "assigned device-3": 2, "assigned device-4": 1, "assigned device-5": 1,
		"refused device-4": 1, "refused device-5": 1, "refused device-3": 2,
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("event log: %d × %q, want %d (all: %v)", count[k], k, n, count)
		}
	}
}

func TestIsolation(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	a := e.deviceV5(e.interA.Leaf(t, "dev-a"))
	b := e.deviceV5(e.interA.Leaf(t, "dev-b"))
	c := e.deviceV3(e.interA.Leaf(t, "dev-c"))

	// A and C provision; B, subscribed to the same filter, must receive
	// nothing of theirs: its first message is the answer to its own
	// request.
	stA := provision(t, a, "dev-a", 1)
	provision(t, c, "dev-c", 1)
	select {
	case m := <-b.msgs:
		t.Fatalf("dev-b received %s", m.topic)
	case <-time.After(quiet):
	}
	if st := provision(t, b, "dev-b", 1); st.RegistrationState.RegistrationID != "dev-b" {
		t.Fatalf("dev-b got %+v", st.RegistrationState)
	}
	// B cannot read A's operation.
	r := request(t, b, pollTopic("x", stA.OperationID), 1, nil, "x")
	if r.status != 404 || r.errorDetails(t).ErrorCode != wire.ErrorCodeOperationNotFound {
		t.Fatalf("dev-b polling dev-a's operation: %d %s", r.status, r.body)
	}

	// Nothing else exists for a device.
	for _, f := range []string{"#", "$dps/#", "$dps/registrations/res/+/#", "$dps/registrations/PUT/#", hooks.EventFilter, "devices/dev-a/messages"} {
		if got := b.subscribe(f, 1); len(got) != 1 || got[0] != 0x87 {
			t.Errorf("v5 subscribe %q: reasons %x, want 87", f, got)
		}
		if got := c.subscribe(f, 1); got != 0x80 {
			t.Errorf("3.1.1 subscribe %q: granted %x, want 80", f, got)
		}
	}
	for _, topic := range []string{"devices/dev-b/messages/events", "$dps/registrations/res/200/?$rid=1", hooks.EventTopicPrefix + "assigned/dev-b"} {
		if err := b.publish(topic, 1, []byte("{}")); err == nil || !strings.Contains(err.Error(), "0x87") {
			t.Errorf("v5 publish %q: %v, want PUBACK 0x87", topic, err)
		}
	}
	select {
	case m := <-a.msgs:
		t.Fatalf("dev-a received %s", m.topic)
	case <-time.After(quiet):
	}
	// A 3.1.1 client publishing QoS 1 where it may not is disconnected
	// (MQTT 3.1.1 has no negative PUBACK).
	_ = c.publish("devices/dev-c/messages/events", 1, []byte("{}"))
	deadline := time.Now().Add(waitTimeout)
	for c.c.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.c.IsConnectionOpen() {
		t.Fatal("3.1.1 device publishing outside its topics stays connected")
	}
}

func TestConnectRefusals(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	leaf := e.interA.Leaf(t, "dev-1")
	stranger := pkitest.NewRoot(t).Leaf(t, "dev-x")
	tests := []struct {
		name       string
		leaf       *pkitest.Leaf
		clientID   string
		user       string
		down       bool
		v5Code     byte
		reason     string
		v3Code     byte
		wantsEvent bool
	}{
		{"client ID differs from username", leaf, "dev-2", username("dev-1"), false, 0x87, "401000 client ID must equal the registration ID", 5, true},
		{"username differs from certificate CN", leaf, "dev-2", username("dev-2"), false, 0x87, "401002 registration ID does not match certificate CN", 5, true},
		{"case-insensitive CN match is accepted", leaf, "DEV-1", username("DEV-1"), false, 0, "", 0, false},
		{"other ID scope", leaf, "dev-1", wire.FormatUsername("0ne00OTHER", "dev-1", "", ""), false, 0x87, "401000 unknown ID scope", 5, true},
		{"malformed username", leaf, "dev-1", "dev-1", false, 0x87, "401000 malformed username", 5, true},
		{"unenrolled certificate", stranger, "dev-x", username("dev-x"), false, 0x87, "401002 ", 5, true},
		{"store down: fail closed", leaf, "dev-1", username("dev-1"), true, 0x88, "503000 service unavailable", 3, false},
		{"wrong service token", nil, "svc", hooks.ServiceUsername, false, 0x87, "401000 invalid service credentials", 5, false},
		{"no certificate, malformed username", nil, "x", "x", false, 0x87, "401000 malformed username", 5, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.decider.down.Store(tc.down)
			defer e.decider.down.Store(false)
			before, _ := e.store.ReadEvents(context.Background(), "", 1000)
			if tc.v5Code == 0 {
				d, ca, err := e.dialV5(tc.leaf, tc.clientID, tc.user)
				if err != nil {
					t.Fatalf("connect: %v %+v", err, ca)
				}
				d.subscribe(wire.ResponseFilter, 1)
				provision(t, d, tc.clientID, 1)
				return
			}
			e.refusedV5(tc.leaf, tc.clientID, tc.user, tc.v5Code, tc.reason)
			e.refusedV3(tc.leaf, tc.clientID, tc.user, tc.v3Code)
			after, _ := e.store.ReadEvents(context.Background(), "", 1000)
			if got := len(after) - len(before); tc.wantsEvent && got != 2 {
				t.Fatalf("%d refusal events, want 2", got)
			} else if !tc.wantsEvent && got != 0 {
				t.Fatalf("%d events for an anonymous refusal, want 0", got)
			}
			if tc.wantsEvent && after[len(after)-1].Type != provisioning.EventRefused {
				t.Fatalf("last event %+v", after[len(after)-1])
			}
		})
	}
	t.Run("MQTT 3.1 is refused", func(t *testing.T) {
		d := e.interA.Leaf(t, "dev-31")
		_, rc, err := e.dialV3Version(d, 3)
		if err == nil || rc != 1 {
			t.Fatalf("MQTT 3.1 connect: rc %d err %v, want rc 1", rc, err)
		}
	})
}

func TestBadRequestsWhileOthersProvision(t *testing.T) {
	// The rate limits are lifted here (TestPollRateLimit covers them), so
	// that the other device can loop as fast as it likes.
	e := newEnv(t, func(o *hooks.Options) { o.MinPollInterval = time.Microsecond; o.PollBurst = 1 << 20 })
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)

	// Another device keeps provisioning all along.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var rounds int
	var bgErr error
	other := e.deviceV3(e.interA.Leaf(t, "dev-busy"))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := provisionErr(other, "dev-busy"); err != nil {
				bgErr = err
				return
			}
			rounds++
		}
	}()

	v5 := e.deviceV5(e.interA.Leaf(t, "dev-bad"))
	v3 := e.deviceV3(e.interA.Leaf(t, "dev-bad3"))
	big := `{"registrationId":"dev-bad","payload":"` + strings.Repeat("x", wire.MaxRequestBody) + `"}`
	tests := []struct {
		name       string
		topic      string
		body       string
		wantRID    string
		wantStatus int
		wantCode   int
	}{
		{"unknown path", "$dps/registrations/PUT/iotdps-nope/?$rid=7", "{}", "7", 400, wire.ErrorCodeBadTopic},
		{"missing $rid", "$dps/registrations/PUT/iotdps-register/?api-version=2019-03-31", "{}", "", 400, wire.ErrorCodeBadTopic},
		{"poll without operationId", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8", "", "8", 400, wire.ErrorCodeBadTopic},
		{"invalid JSON", registerTopic("9"), `{"registrationId":`, "9", 400, wire.ErrorCodeInvalidJSON},
		{"body not an object", registerTopic("10"), `[1,2]`, "10", 400, wire.ErrorCodeInvalidJSON},
		{"registration ID differs from the username's", registerTopic("11"), `{"registrationId":"dev-other"}`, "11", 400, wire.ErrorCodeRegistrationIDMismatch},
		{"TPM body in an X.509 session", registerTopic("12"), `{"tpm":{"endorsementKey":"AAAA"}}`, "12", 400, wire.ErrorCodeBadRequest},
		{"body over 96 KiB", registerTopic("13"), big, "13", 400, wire.ErrorCodePayloadTooLarge},
		{"unknown operation", pollTopic("14", "5.0123456789abcdef.00000000-0000-0000-0000-000000000000"), " ", "14", 404, wire.ErrorCodeOperationNotFound},
		{"$rid echoed byte for byte", "$dps/registrations/PUT/iotdps-register/?api-version=1&$rid=Ab%2F-_.~:é", `{"registrationId":"x"}`, "Ab%2F-_.~:é", 400, wire.ErrorCodeRegistrationIDMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range []device{v5, v3} {
				r := request(t, d, tc.topic, 1, []byte(tc.body), tc.wantRID)
				if r.status != tc.wantStatus || r.retryAfter != 0 {
					t.Fatalf("%T: status %d retry-after %v, want %d: %s", d, r.status, r.retryAfter, tc.wantStatus, r.body)
				}
				if got := r.errorDetails(t).ErrorCode; got != tc.wantCode {
					t.Fatalf("%T: errorCode %d, want %d", d, got, tc.wantCode)
				}
			}
		})
	}
	// Both misbehaving devices can still provision.
	provision(t, v5, "dev-bad", 1)
	provision(t, v3, "dev-bad3", 1)

	close(stop)
	wg.Wait()
	if bgErr != nil || rounds == 0 {
		t.Fatalf("the other device: %d rounds, error %v", rounds, bgErr)
	}
}

// provisionErr is provision for a goroutine: errors instead of t.Fatal.
func provisionErr(d device, regID string) error {
	if err := d.publish(registerTopic("bg"), 1, []byte(`{"registrationId":"`+regID+`"}`)); err != nil {
		return err
	}
	m, ok := d.next()
	if !ok || !strings.HasPrefix(m.topic, "$dps/registrations/res/202/?$rid=bg&") {
		return fmt.Errorf("register answered %q %s", m.topic, m.body)
	}
	st, err := wire.DecodeOperationStatus(m.body)
	if err != nil {
		return err
	}
	if err := d.publish(pollTopic("bgp", st.OperationID), 1, nil); err != nil {
		return err
	}
	m, ok = d.next()
	if !ok || m.topic != "$dps/registrations/res/200/?$rid=bgp" {
		return fmt.Errorf("poll answered %q %s", m.topic, m.body)
	}
	return nil
}

func TestPollRateLimit(t *testing.T) {
	e := newEnv(t, func(o *hooks.Options) { o.MinPollInterval = time.Minute; o.PollBurst = 3 })
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	d := e.deviceV5(e.interA.Leaf(t, "dev-poll"))
	st := provision(t, d, "dev-poll", 1) // one poll spent
	for i := 0; i < 2; i++ {
		if r := request(t, d, pollTopic("ok", st.OperationID), 1, nil, "ok"); r.status != 200 {
			t.Fatalf("poll %d: %d %s", i+2, r.status, r.body)
		}
	}
	r := request(t, d, pollTopic("fast", st.OperationID), 1, nil, "fast")
	if r.status != 429 || r.retryAfter < 3*time.Second || r.errorDetails(t).ErrorCode != wire.ErrorCodePollingTooFast {
		t.Fatalf("fourth poll: %s %s", r.topic, r.body)
	}
	// Registers are limited separately and still work.
	if r := request(t, d, registerTopic("reg"), 1, nil, "reg"); r.status != 202 {
		t.Fatalf("register after the poll limit: %d %s", r.status, r.body)
	}
}

func TestUnauthenticatedDevice(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	leaf := e.interA.Leaf(t, "dev-1")
	x509dev := e.deviceV5(leaf)

	// A device without a certificate claiming dev-1's identity gets a
	// restricted session that cannot take dev-1's over...
	imp, ca, err := e.dialV5(nil, "dev-1", username("dev-1"))
	if err != nil {
		t.Fatalf("connect without a certificate: %v %+v", err, ca)
	}
	imp.subscribe(wire.ResponseFilter, 1)
	// ...and its register request is refused: no TPM or symmetric key yet.
	r := request(t, imp, registerTopic("t1"), 1, []byte(`{"registrationId":"dev-1"}`), "t1")
	if r.status != 401 || r.errorDetails(t).ErrorCode != wire.ErrorCodeUnauthorized {
		t.Fatalf("register without a certificate: %d %s", r.status, r.body)
	}
	if got := imp.subscribe(hooks.EventFilter, 1); got[0] != 0x87 {
		t.Fatalf("unauthenticated device subscribed to events: %x", got)
	}
	v3, rc, err := e.dialV3(nil, "tpm-dev", username("tpm-dev"), true)
	if err != nil {
		t.Fatalf("3.1.1 connect without a certificate: rc %d %v", rc, err)
	}
	v3.subscribe(wire.ResponseFilter, 1)
	if r := request(t, v3, registerTopic("t2"), 0, nil, "t2"); r.status != 401 {
		t.Fatalf("3.1.1 register without a certificate: %d %s", r.status, r.body)
	}
	// dev-1's own session is intact.
	checkAssigned(t, provision(t, x509dev, "dev-1", 1), leaf, "group-a")
}

func TestPubackBeforeResponse(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	v5 := e.deviceV5(e.interA.Leaf(t, "dev-order5"))
	v3 := e.deviceV3(e.interA.Leaf(t, "dev-order3"))
	for i := 0; i < 3; i++ {
		provision(t, v5, "dev-order5", 1)
		provision(t, v3, "dev-order3", 1)
	}
	for name, tr := range map[string]*traceConn{"v5": v5.trace, "3.1.1": v3.trace} {
		seen := tr.seen()
		responses := 0
		for i, p := range seen {
			if p.typ != 3 || !strings.HasPrefix(p.topic, wire.ResponseTopicPrefix) {
				continue
			}
			responses++
			if i == 0 || seen[i-1].typ != 4 {
				t.Fatalf("%s: response %q not preceded by its PUBACK: %+v", name, p.topic, seen)
			}
			if p.packetID == 0 {
				t.Fatalf("%s: QoS 1 response without a packet ID", name)
			}
		}
		if responses != 6 {
			t.Fatalf("%s: %d responses traced, want 6: %+v", name, responses, seen)
		}
	}
}

func TestRequestQoS(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	// QoS 0 requests are answered (C and Java SDKs publish at QoS 0), and
	// so are QoS 2 ones.
	v5 := e.deviceV5(e.interA.Leaf(t, "dev-q5"))
	v3 := e.deviceV3(e.interA.Leaf(t, "dev-q3"))
	for _, qos := range []byte{0, 2} {
		provision(t, v5, "dev-q5", qos)
		provision(t, v3, "dev-q3", qos)
	}
	// A QoS 0 subscription gets QoS 0 responses; QoS 2 is granted as 1.
	leaf := e.interA.Leaf(t, "dev-q0")
	d, _, err := e.dialV5(leaf, "dev-q0", username("dev-q0"))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.subscribe(wire.ResponseFilter, 0); got[0] != 0 {
		t.Fatalf("granted %d", got[0])
	}
	if err := d.publish(registerTopic("z"), 1, nil); err != nil {
		t.Fatal(err)
	}
	if m, ok := d.next(); !ok || m.qos != 0 {
		t.Fatalf("response %+v, want QoS 0", m)
	}
	if got := d.subscribe(wire.ResponseFilter, 2); got[0] != 1 {
		t.Fatalf("QoS 2 subscription granted %d, want 1", got[0])
	}
}

func TestConnackProperties(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	leaf := e.interA.Leaf(t, "dev-ka")
	d, ca, err := e.dialV5(leaf, "dev-ka", username("dev-ka"), func(c *paho.Connect) { c.KeepAlive = 0; c.CleanStart = false })
	if err != nil {
		t.Fatal(err)
	}
	if p := ca.Properties; p == nil || p.MaximumPacketSize == nil || *p.MaximumPacketSize != hooks.DefaultMaxPacketSize {
		t.Fatalf("CONNACK does not announce the maximum packet size: %+v", p)
	}
	if p := ca.Properties; p.ServerKeepAlive == nil || *p.ServerKeepAlive != uint16(hooks.DefaultMaxKeepalive/time.Second) {
		t.Fatalf("keepalive 0 not bounded: %+v", p.ServerKeepAlive)
	}
	// A second connection of the same device with CleanStart=false takes
	// the session over; DPS sessions are never present.
	d.subscribe(wire.ResponseFilter, 1)
	_, ca2, err := e.dialV5(leaf, "dev-ka", username("dev-ka"), func(c *paho.Connect) { c.CleanStart = false })
	if err != nil || ca2.SessionPresent {
		t.Fatalf("takeover: err %v session present %v", err, ca2 != nil && ca2.SessionPresent)
	}
	// 3.1.1 with CleanSession=false (Python, Java): a reconnect finds no
	// session.
	v3leaf := e.interA.Leaf(t, "dev-ka3")
	for i := 0; i < 2; i++ {
		c, rc, err := e.dialV3(v3leaf, "dev-ka3", username("dev-ka3"), false)
		if err != nil {
			t.Fatalf("3.1.1 clean=false: rc %d %v", rc, err)
		}
		if c.sessionPresent {
			t.Fatalf("3.1.1 connect %d: session present", i+1)
		}
		c.subscribe(wire.ResponseFilter, 1)
		provision(t, c, "dev-ka3", 1)
		c.close()
	}
}

func TestEventsToServices(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	e.putGroup("group-b", e.interB, provisioning.StatusDisabled)

	// One service authenticates by certificate, one by token.
	svcLeaf := e.svcCA.Leaf(t, "backend-1")
	byCert, ca, err := e.dialV5(svcLeaf, "backend-1", "")
	if err != nil {
		t.Fatalf("service by certificate: %v %+v", err, ca)
	}
	// With a device username the same certificate is a device (that no group
	// admits): device connects never pay for the service-CA chain check.
	e.refusedV5(svcLeaf, "backend-1", username("backend-1"), 0x87, "401002")
	byToken, ca, err := e.dialV5(nil, "backend-2", hooks.ServiceUsername, func(c *paho.Connect) {
		c.Password, c.PasswordFlag = []byte(testToken), true
	})
	if err != nil {
		t.Fatalf("service by token: %v %+v", err, ca)
	}
	for _, s := range []*v5Device{byCert, byToken} {
		if got := s.subscribe(hooks.EventFilter, 1); got[0] != 1 {
			t.Fatalf("service subscribe: %x", got)
		}
		if got := s.subscribe(wire.ResponseFilter, 1); got[0] != 0x87 {
			t.Fatalf("service subscribed to device responses: %x", got)
		}
		if err := s.publish(registerTopic("1"), 1, nil); err == nil || !strings.Contains(err.Error(), "0x87") {
			t.Fatalf("service published into device topics: %v", err)
		}
	}
	if got := byToken.subscribe("$share/workers/"+hooks.EventFilter, 1); got[0] != 1 {
		t.Fatalf("shared event subscription: %x", got)
	}

	d := e.deviceV5(e.interA.Leaf(t, "dev-ev"))
	st := provision(t, d, "dev-ev", 1)
	e.refusedV5(e.interB.Leaf(t, "dev-off"), "dev-off", username("dev-off"), 0x87, "401002")

	for name, s := range map[string]*v5Device{"certificate": byCert, "token": byToken} {
		var got []provisioning.Event
		for len(got) < 2 {
			m, ok := s.next()
			if !ok {
				t.Fatalf("service (%s) got %d events, want 2", name, len(got))
			}
			var ev provisioning.Event
			if err := json.Unmarshal(m.body, &ev); err != nil {
				t.Fatalf("event %s: %v", m.body, err)
			}
			if m.topic != hooks.EventTopicPrefix+string(ev.Type)+"/"+ev.RegistrationID {
				t.Fatalf("event topic %q for %+v", m.topic, ev)
			}
			got = append(got, ev)
		}
		a, r := got[0], got[1]
		if a.Type != provisioning.EventAssigned || a.RegistrationID != "dev-ev" || a.AssignedHub != st.RegistrationState.AssignedHub ||
			a.OperationID != st.OperationID || a.EnrollmentGroupID != "group-a" || a.ID == "" || a.Node != "test-node" {
			t.Fatalf("assigned event: %+v", a)
		}
		if r.Type != provisioning.EventRefused || r.RegistrationID != "dev-off" || r.ErrorCode != 401002 ||
			r.Reason != "groupDisabled" || r.EnrollmentGroupID != "group-b" || r.Explanation == "" {
			t.Fatalf("refused event: %+v", r)
		}
	}
}

func TestOversizePacket(t *testing.T) {
	e := newEnv(t, func(o *hooks.Options) { o.MaxPacketSize = 8 << 10 })
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	victim := e.deviceV5(e.interA.Leaf(t, "dev-big"))
	other := e.deviceV5(e.interA.Leaf(t, "dev-small"))
	// paho.golang sends it although CONNACK announced the limit; QoS 0 so
	// that the publish does not wait for an ack that never comes.
	_ = victim.publish(registerTopic("big"), 0, make([]byte, 16<<10))
	select {
	case <-victim.c.Done():
	case <-time.After(waitTimeout):
		t.Fatal("oversize packet did not end the connection")
	}
	provision(t, other, "dev-small", 1)
}

func TestNewValidates(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{})
	if _, err := hooks.New(srv, hooks.Options{IDScope: "x"}); err == nil {
		t.Fatal("New without a decider, registrar or inline client: want an error")
	}
}

func TestWillIsDropped(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	svc, _, err := e.dialV5(e.svcCA.Leaf(t, "backend"), "backend", "")
	if err != nil {
		t.Fatal(err)
	}
	svc.subscribe(hooks.EventFilter, 1)
	// mochi publishes wills without an ACL check: a device must not be
	// able to forge an event that way.
	leaf := e.interA.Leaf(t, "dev-will")
	d, _, err := e.dialV5(leaf, "dev-will", username("dev-will"), func(c *paho.Connect) {
		c.WillMessage = &paho.WillMessage{Topic: hooks.EventTopicPrefix + "assigned/dev-forged", QoS: 1, Retain: true, Payload: []byte(`{"type":"assigned"}`)}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = d.trace.Conn.Close() // abrupt: the will would be sent now
	select {
	case m := <-svc.msgs:
		t.Fatalf("service received %s %s", m.topic, m.body)
	case <-time.After(quiet):
	}
	late, _, err := e.dialV5(e.svcCA.Leaf(t, "backend-late"), "backend-late", "")
	if err != nil {
		t.Fatal(err)
	}
	late.subscribe(hooks.EventFilter, 1)
	select {
	case m := <-late.msgs:
		t.Fatalf("late service received a retained %s", m.topic)
	case <-time.After(quiet):
	}
}

// wrappedConn stands for a WebSocket connection: a net.Conn that is not a
// *tls.Conn but can hand out the TLS connection it runs on.
type wrappedConn struct {
	net.Conn
	tls *tls.Conn
}

func (c wrappedConn) NetConn() net.Conn { return c.tls }

type wrappingListener struct{ net.Listener }

func (l wrappingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	// mochi reads the CONNECT before any hook runs, so the handshake is
	// complete by then; the wrapper forwards reads and writes.
	return wrappedConn{Conn: tc, tls: tc}, nil
}

func TestPeerCertificatesThroughWrapper(t *testing.T) {
	e := newEnv(t)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := e.serverCA.Server(t)
	tl := tls.NewListener(raw, &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	if err := e.srv.AddListener(listeners.NewNet("wrapped", wrappingListener{tl})); err != nil {
		t.Fatal(err)
	}
	e.srv.Listeners.Serve("wrapped", e.srv.EstablishConnection)
	e.addr = raw.Addr().String()
	leaf := e.interA.Leaf(t, "dev-ws")
	d, ca, err := e.dialV5(leaf, "dev-ws", username("dev-ws"))
	if err != nil {
		t.Fatalf("connect through the wrapped listener: %v %+v", err, ca)
	}
	d.subscribe(wire.ResponseFilter, 1)
	checkAssigned(t, provision(t, d, "dev-ws", 1), leaf, "group-a")
}
