package hooks

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// The reserved service topic. Every event is published on
// EventTopicPrefix + "<type>/<registrationId>"; services subscribe to
// EventFilter (or a narrower filter under the prefix, or a shared
// subscription "$share/<group>/$dpsbroker/events/#" to spread events over
// several consumers).
const (
	EventTopicPrefix = "$dpsbroker/events/"
	EventFilter      = EventTopicPrefix + "#"
)

// sharePrefix starts an MQTT 5 shared subscription filter.
const sharePrefix = "$share/"

// OnACLCheck is the whole topic policy; nothing is allowed by default.
//   - A device may publish under "$dps/registrations/" except the response
//     tree (anything that is not a register or poll topic is answered with
//     400), and may subscribe only to "$dps/registrations/res/#". Responses
//     are written to the requesting connection and never routed, so no
//     delivery through the topic tree ever reaches a device.
//   - A service may subscribe to, and receive, the event topics only, and
//     may publish nothing.
//
// mochi ORs ACL hooks: another hook that allows more widens this policy.
func (h *DPS) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	s := h.sessions.get(cl)
	if s == nil {
		return false
	}
	switch {
	case s.kind.device() && write:
		return strings.HasPrefix(topic, wire.RequestTopicPrefix) && !strings.HasPrefix(topic, wire.ResponseTopicPrefix)
	case s.kind.device():
		return topic == wire.ResponseFilter
	case s.kind == kindService && !write:
		return isEventFilter(topic)
	}
	return false
}

// isEventFilter reports whether a filter or topic lies inside the event
// tree, directly or as a shared subscription.
func isEventFilter(f string) bool {
	if rest, ok := strings.CutPrefix(f, sharePrefix); ok {
		_, f, ok = strings.Cut(rest, "/")
		if !ok {
			return false
		}
	}
	return strings.HasPrefix(f, EventTopicPrefix)
}

// OnSubscribe grants devices at most QoS 1, as DPS does (it downgrades QoS
// 2); responses are sent at QoS 1.
func (h *DPS) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	s := h.sessions.get(cl)
	if s == nil || !s.kind.device() {
		return pk
	}
	for i := range pk.Filters {
		if pk.Filters[i].Qos > 1 {
			pk.Filters[i].Qos = 1
		}
	}
	return pk
}
