package brokertest_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
)

// Example provisions a device with plain paho.golang, the way a device
// SDK does: CONNECT with the DPS username, SUBSCRIBE to the response
// filter, register, then poll the operation until it is assigned. In a
// test, pass t instead of the stand-in.
func Example() {
	t := newExampleT()
	defer t.finish()

	b := brokertest.New(t)
	factory := b.EnrollGroup(t, "factory-a")    // intermediate CA + enabled group
	dev := b.MintDevice(t, factory, "device-1") // its device certificate
	conn, err := tls.Dial("tcp", b.MQTTAddr(), b.TLSConfigFor(dev))
	if err != nil {
		panic(err)
	}
	responses := make(chan *paho.Publish, 1)
	c := paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			responses <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "device-1", Username: b.Username("device-1"), UsernameFlag: true, CleanStart: true, KeepAlive: 30}); err != nil {
		panic(err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$dps/registrations/res/#", QoS: 1}}}); err != nil {
		panic(err)
	}
	var result struct {
		OperationID       string `json:"operationId"`
		Status            string `json:"status"`
		RegistrationState struct {
			AssignedHub string `json:"assignedHub"`
		} `json:"registrationState"`
	}
	topic := "$dps/registrations/PUT/iotdps-register/?$rid=1"
	for i := 2; result.Status != "assigned"; i++ {
		if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"registrationId":"device-1"}`)}); err != nil {
			panic(err)
		}
		if err := json.Unmarshal((<-responses).Payload, &result); err != nil {
			panic(err)
		}
		topic = fmt.Sprintf("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=%d&operationId=%s", i, result.OperationID)
	}
	fmt.Println(result.Status, result.RegistrationState.AssignedHub)
	_ = c.Disconnect(&paho.Disconnect{})
	// Output: assigned hub-1.example.net
}

// exampleT stands in for the *testing.T a real test passes.
type exampleT struct {
	dir      string
	cleanups []func()
}

func newExampleT() *exampleT {
	dir, err := os.MkdirTemp("", "brokertest-example-")
	if err != nil {
		panic(err)
	}
	return &exampleT{dir: dir}
}

func (t *exampleT) Helper()                        {}
func (t *exampleT) Logf(string, ...any)            {}
func (t *exampleT) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }
func (t *exampleT) Cleanup(f func())               { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) TempDir() string                { d, _ := os.MkdirTemp(t.dir, ""); return d }

func (t *exampleT) finish() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	_ = os.RemoveAll(t.dir)
}
