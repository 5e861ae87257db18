// Package device is the device side of provisioning: a client that
// registers a device with dpsbroker (or any Azure DPS-compatible MQTT
// endpoint) over MQTT 5 with paho.golang, and returns its registration
// state.
//
// It behaves like a well-behaved DPS device SDK (the project's
// PROTOCOL.md):
//
//   - TLS 1.2+ with the device's X.509 chain; the MQTT client ID is the
//     registration ID (the leaf CN) and the username is
//     "{idScope}/registrations/{id}/api-version=...&ClientVersion=...".
//   - SUBSCRIBE $dps/registrations/res/# at QoS 1 and wait for SUBACK
//     before the first request; every request is a QoS 1 PUBLISH.
//   - Every request carries a fresh random $rid; responses are matched by
//     $rid alone and anything else on the response topic is ignored.
//   - 202 assigning: wait the response's retry-after (2 s when absent,
//     never less than the broker asked), then poll the operation.
//     200: assigned returns the result; failed and disabled return a
//     *RegistrationError.
//   - 429 and 5xx: wait with exponential backoff and jitter, never less
//     than retry-after, and send the request again, up to MaxAttempts.
//     Other statuses return an *Error at once.
//   - A CONNACK refusal returns a *ConnectError with the v5 reason code
//     and the reason string ("401002 ..." from dpsbroker).
//   - At the end, UNSUBSCRIBE and DISCONNECT. Everything is bounded by
//     the caller's context.
//
// A minimal run:
//
//	id, err := device.LoadX509Identity("dev.pem", "dev.key")
//	...
//	res, err := device.Provision(ctx, device.Config{
//		Broker:      "dps.example.net:8883",
//		IDScope:     "0ne00000001",
//		Certificate: &id,
//		TLSConfig:   &tls.Config{RootCAs: roots},
//	})
//	// res.AssignedHub, res.DeviceID
//
// TPM devices set Config.TPM (a *clients/tpm.Device, or anything with
// EndorsementKey, StorageRootKey, ActivateAndImport and SignSAS) instead
// of a certificate: the register request carries the EK and SRK (and
// Config.EKCertificate for TPM enrollment groups), the 401 challenge is
// imported into the TPM, and the SAS token signed there answers it in the
// next register request (tpm.sasToken) or, with AnswerOnReconnect, as the
// password of a new connection. The key of registrationState.tpm is
// imported on assignment. An X.509 device whose key lives in a TPM needs
// nothing special: put the *clients/tpm.Signer in Certificate.PrivateKey,
// or let LoadX509IdentityWithKey pair it with the certificate file; a
// certificate issued for another key is then refused (ErrKeyMismatch)
// before any connection.
//
// The package imports paho.golang, the standard library and
// provisioning/wire only, so that device code links nothing of the
// server.
package device
