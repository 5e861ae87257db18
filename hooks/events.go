package hooks

import (
	"encoding/json"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// EventTopic is the topic an event is published on:
// "$dpsbroker/events/<type>/<registrationId>". A registration ID that is
// not a valid one (a refused device may claim anything) is replaced by
// "_", so that the topic never carries wildcards or extra levels.
func EventTopic(ev *provisioning.Event) string {
	id := ev.RegistrationID
	if provisioning.ValidateRegistrationID(id, provisioning.MaxRegistrationIDLen) != nil {
		id = "_"
	}
	t := string(ev.Type)
	if t == "" {
		t = "_"
	}
	return EventTopicPrefix + t + "/" + id
}

// PublishEvent publishes ev as JSON (the provisioning.Event shape) on
// EventTopic(ev) at QoS 1, not retained, through srv's inline client, to
// the service subscribers. It is what provisioning.ServiceOptions.Publish
// should call: wire it as
//
//	Publish: func(ev *provisioning.Event) { _ = hooks.PublishEvent(srv, ev) }
//
// Delivery queues the message on each subscriber's connection without
// waiting for it; a subscriber whose queue is full misses it (it can
// catch up from the event log).
func PublishEvent(srv *mqtt.Server, ev *provisioning.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("hooks: marshal event: %w", err)
	}
	if err := srv.Publish(EventTopic(ev), b, false, 1); err != nil {
		return fmt.Errorf("hooks: publish event: %w", err)
	}
	return nil
}
