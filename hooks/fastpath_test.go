package hooks_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/hooks"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

func withFastPath(o *hooks.Options) { o.FastPath = true }

// TestFastPath: with Options.FastPath the register request itself gets the
// final 200 (operationId included, PUBACK first), over MQTT 3.1.1 and 5;
// the operation can still be polled with the same answer; refusals are
// unchanged. Without it, the register gets 202 as before.
func TestFastPath(t *testing.T) {
	for _, fast := range []bool{false, true} {
		t.Run(fmt.Sprintf("fast=%v", fast), func(t *testing.T) {
			var mods []func(*hooks.Options)
			if fast {
				mods = append(mods, withFastPath)
			}
			e := newEnv(t, mods...)
			e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
			leaf5, leaf3 := e.interA.Leaf(t, "dev-fast5"), e.interA.Leaf(t, "dev-fast3")
			v5, v3 := e.deviceV5(leaf5), e.deviceV3(leaf3)
			for _, c := range []struct {
				d    device
				leaf *pkitest.Leaf
			}{{v5, leaf5}, {v3, leaf3}} {
				id := c.leaf.Cert.Subject.CommonName
				rid := "reg-" + id
				r := request(t, c.d, registerTopic(rid), 1, []byte(`{"registrationId":"`+id+`"}`), rid)
				st := r.operation(t)
				if !fast {
					if r.status != 202 || st.Status != wire.StatusAssigning || r.retryAfter == 0 {
						t.Fatalf("%s: default flow: register answered %d (retry-after %v) %s", id, r.status, r.retryAfter, r.body)
					}
					continue
				}
				if r.status != 200 || r.retryAfter != 0 || strings.Contains(r.topic, "retry-after") {
					t.Fatalf("%s: fast path: register answered %s %s", id, r.topic, r.body)
				}
				if st.OperationID == "" {
					t.Fatalf("%s: 200 without operationId (embedded C and Java need it): %s", id, r.body)
				}
				checkAssigned(t, st, c.leaf, "group-a")
				// An SDK that polls anyway gets the same final answer.
				rid2 := "poll-" + id
				p := request(t, c.d, pollTopic(rid2, st.OperationID), 1, []byte(" "), rid2)
				if p.status != 200 || !bytes.Equal(p.body, r.body) {
					t.Fatalf("%s: poll after the fast path: %d %s, want the register's %s", id, p.status, p.body, r.body)
				}
			}
			// The response still follows its PUBACK.
			for name, tr := range map[string]*traceConn{"v5": v5.trace, "3.1.1": v3.trace} {
				seen := tr.seen()
				for i, p := range seen {
					if p.typ == 3 && strings.HasPrefix(p.topic, wire.ResponseTopicPrefix) && (i == 0 || seen[i-1].typ != 4) {
						t.Fatalf("%s: response %q not preceded by its PUBACK: %+v", name, p.topic, seen)
					}
				}
			}
			// A device disabled since CONNECT is refused on register as
			// before: the fast path changes only the success answer.
			leafD := e.interA.Leaf(t, "dev-fastoff")
			d := e.deviceV5(leafD)
			e.putEnrollment(leafD, provisioning.StatusDisabled)
			r := request(t, d, registerTopic("off"), 1, nil, "off")
			if r.status != 401 || r.errorDetails(t).ErrorCode != wire.ErrorCodeInvalidCertificate {
				t.Fatalf("disabled device: %d %s", r.status, r.body)
			}
		})
	}
}

// TestFastPathTPM: the second TPM leg on the fast path answers 200 with
// registrationState.tpm.authenticationKey (the C SDK requires it).
func TestFastPathTPM(t *testing.T) {
	e := newEnv(t, withFastPath)
	dev, _ := simTPM(t, 7, tpm.ECC)
	id := dev.RegistrationID()
	e.enrollTPM(id, dev.EndorsementKey(), provisioning.StatusEnabled)
	c := e.tpmConn(t, id, "")
	blob := c.challenge(keysOf(dev))
	r := c.register(answer(t, dev, blob, id))
	if r.status != 200 {
		t.Fatalf("second leg on the fast path: %d %s", r.status, r.body)
	}
	st := r.operation(t)
	if st.OperationID == "" {
		t.Fatalf("no operationId: %s", r.body)
	}
	checkTPMAssigned(t, st.RegistrationState, nil, id)
}
