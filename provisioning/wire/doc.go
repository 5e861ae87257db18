// Package wire holds the Azure DPS device-side JSON payloads and the MQTT
// topic grammar of the registration API ($dps/registrations/...).
//
// It depends on the standard library only, so that both the broker side
// (hooks) and the device side (clients) share one definition of what goes
// over the wire. The contract it implements is the project's docs/PROTOCOL.md.
package wire
