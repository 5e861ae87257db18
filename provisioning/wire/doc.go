// Package wire holds the Azure DPS device-side JSON payloads and the MQTT
// topic grammar of the registration API ($dps/registrations/...).
//
// It depends on the standard library only, so that both the broker side
// (hooks) and the device side (clients) share one definition of what goes
// over the wire. The contract it implements is the project's PROTOCOL.md.
//
// Broker side: ParseUsername at CONNECT, ParseRequestTopic and
// DecodeRegisterRequest per request, AppendResponseTopic and the response
// bodies (RegistrationOperationStatus, ErrorDetails, TPMChallenge) in
// reply. Device side: FormatUsername, AppendRegisterTopic, AppendPollTopic,
// ParseResponseTopic and the Decode* functions for response bodies. Errors
// a device should see carry an ErrorCode method giving the DPS error code
// (HTTP status x 1000 + suffix).
package wire
