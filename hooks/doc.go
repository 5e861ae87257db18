// Package hooks turns a mochi-mqtt v2 broker into an Azure-DPS-compatible
// device provisioning service. One hook, *DPS, does connect
// authentication, the topic ACL, the DPS request handler and event
// publication; it adapts mochi to the provisioning domain (an X509Decider
// such as *x509attest.Evaluator and a Registrar such as
// *provisioning.Service).
//
// # Wiring
//
//	srv := mqtt.New(&mqtt.Options{InlineClient: true}) // inline client: events
//	svc, _ := provisioning.NewService(provisioning.ServiceOptions{
//		Registrations: st, Operations: st, Events: st, Allocator: alloc,
//		Publish: func(ev *provisioning.Event) { _ = hooks.PublishEvent(srv, ev) },
//	})
//	dps, _ := hooks.New(srv, hooks.Options{
//		IDScope: scope, Decider: x509attest.New(st, x509attest.Options{}), Registrar: svc,
//		ServiceCAs: serviceRoots, // and/or ServiceToken
//	})
//	_ = srv.AddHook(dps, nil) // before srv.Serve
//
// Constraints on the broker:
//   - Do not add another hook that provides OnConnectAuthenticate or
//     OnACLCheck (auth.AllowHook, ...): mochi ORs them, so it would widen
//     this policy. Hooks that only observe are fine. DPS consumes every
//     device publish in OnPublish (hooks after it never see them).
//   - New lowers Capabilities.MaximumPacketSize to Options.MaxPacketSize,
//     raises MinimumProtocolVersion to 4 (MQTT 3.1.1) and sets
//     Compatibilities.NoInheritedPropertiesOnAck; set other capabilities
//     (MaximumClients, ...) before or after, but do not undo these.
//   - TLS listeners use ClientAuth tls.RequestClientCert: Go must not
//     verify the client chain, so that an unknown or disabled device gets
//     a CONNACK reason code instead of a TLS alert, and devices without a
//     certificate (TPM, symmetric key) can connect at all.
//   - The hook reads the client chain from the connection: cl.Net.Conn
//     must implement ConnectionStater (as *tls.Conn does), or
//     NetConn() net.Conn returning a connection that does (followed up to
//     4 levels). A deadline or rate-limiting wrapper belongs below
//     tls.NewListener, or must implement NetConn. mochi's own WebSocket
//     listener hides the TLS connection, so a WebSocket listener must be
//     the broker's own, with a connection type that implements one of the
//     two (see PeerCertificates).
//   - The no-CONNECT deadline and per-IP connection limits are
//     listener-level and the broker's; the hook bounds keepalives
//     (Options.MaxKeepalive, also imposed on devices that send 0) and the
//     store work of each CONNECT and request (Options.RequestTimeout).
//   - Change feed (provisioning.ChangeWatcher): on ChangeEnrollment call
//     DisconnectRegistration(id); on ChangeGroup call DisconnectGroup(id)
//     and then Recheck (a new or re-enabled group can take precedence over
//     the group that admitted a live session); on ChangeCA and ChangeAll
//     call Recheck. Recheck does store work per live X.509 session: run it
//     on the feed's goroutine, not in a hook. Each register request takes
//     the decision again anyway, so a lagging feed never lets a refused
//     device register.
//
// # Connect
//
// A back-end service connects with a client certificate that verifies
// against Options.ServiceCAs (any username but the device form), or with username "service"
// and Options.ServiceToken as password. Anything else is a device:
//   - Username "{idScope}/registrations/{registrationId}/api-version=..."
//     (any api-version, ClientVersion ignored) with this broker's ID scope
//     (compared ignoring case), a valid registration ID, and a client ID
//     equal to that registration ID, byte for byte (every SDK sends the
//     same string in both).
//   - With a client certificate, the X.509 decision is taken in OnConnect;
//     the decided registration ID (the certificate CN) must equal the
//     username's ignoring case (registration IDs are case-insensitive).
//   - Without one, the device gets a restricted session for TPM
//     attestation on its register request (Options.TPM; see "TPM" below).
//     Its proof is not known yet, so its session gets a private client ID:
//     it cannot take over (disconnect) the session of the device it claims
//     to be. A password on such a connection must parse as a SAS token (the
//     answer to a TPM challenge, verified on the register request),
//     otherwise CONNACK 0x87 "401000 malformed SAS token". Without
//     Options.TPM, or without a tpm object in the body, register requests
//     are answered 401 (errorCode 401000).
//
// Refusals: MQTT 5 CONNACK 0x87 "not authorized" with reason string
// "<DPS error code> <short reason>", e.g. "401002 enrollment group
// disabled" or "401000 client ID must equal the registration ID"; MQTT
// 3.1.1 return code 5. When the decision cannot be taken (store down) the
// hook fails closed: 0x88 "503000 service unavailable" / return code 3.
// MQTT 3.1 is refused (return code 1). Refusals of clients that presented
// a certificate are recorded as events; anonymous ones are only logged.
//
// Device sessions are never persistent: CONNACK session-present is always
// 0 and nothing survives the connection, whatever CleanSession /
// CleanStart says. Wills are dropped for every client, because mochi
// publishes wills without an ACL check.
//
// # Topics
//
//	who      may publish                                  may subscribe / receive
//	device   $dps/registrations/... except .../res/...    $dps/registrations/res/# (QoS <= 1)
//	service  nothing                                      $dpsbroker/events/... (also via $share/<g>/)
//
// A denied publish gets PUBACK 0x87 (MQTT 5); MQTT 3.1.1 has no negative
// PUBACK, so mochi disconnects a 3.1.1 client that publishes QoS 1 where
// it may not (QoS 0 is dropped). A denied subscription gets 0x87 (5) /
// 0x80 (3.1.1).
//
// # Requests
//
// Every device publish is acknowledged and consumed (never routed or
// retained). The request is handled after mochi wrote the PUBACK, and the
// response is written to the requesting connection only, as a QoS 1
// PUBLISH (QoS 0 if the device subscribed at QoS 0) on
// "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]", $rid
// echoed byte for byte. A device that has not subscribed to
// $dps/registrations/res/# receives nothing, as on Azure. Requests at QoS
// 0, 1 and 2 are answered. Bodies are always JSON.
//
//	request                                   status  body
//	register (PUT iotdps-register)            202     {"operationId":..., "status":"assigning"}, retry-after
//	register, Options.FastPath                200     as a final poll (below), when the operation is final
//	poll, operation final                     200     RegistrationOperationStatus (assigned / failed),
//	                                                  registrationState.x509.certificateInfo (+ enrollmentGroupId)
//	poll, still assigning                     202     as for register, retry-after
//	unknown path, missing $rid/operationId    400     errorCode 400001 ($rid salvaged when possible, else empty)
//	body registrationId != username's         400     400002
//	TPM body in an X.509 session              400     400003
//	body not JSON / not an object             400     400004
//	body over 96 KiB (wire.MaxRequestBody)    400     400005
//	TPM first leg (tpm.endorsementKey, SRK)   401     {"authenticationKey":..., "keyName":"registration"}
//	TPM second leg (tpm.sasToken / password)  202/200 as a register; the final poll carries tpm.authenticationKey
//	TPM key malformed / unacceptable          400     400010 / 400011 (400013: EK certificate)
//	TPM: EK not enrolled one, no challenge,
//	     challenge for another SRK            401     401010 / 401011 / 401012
//	no certificate and no TPM attestation     401     401000
//	entry disabled since CONNECT              401     401002 (and a refusal event)
//	operation unknown, expired, not its own   404     404203
//	too many polls / registers                429     429001 / 429002, retry-after
//	store unavailable / internal error        503/500 503000 / 500000, retry-after
//
// Polls and registers are limited separately per connection by a token
// bucket: Options.PollBurst at once, then one per Options.MinPollInterval
// (default 5 and 2 s: Azure's 5 polls per 10 s).
//
// A packet larger than the server's maximum packet size (announced in
// the MQTT 5 CONNACK) makes mochi close that TCP connection at once: the
// device sees the connection drop, with no DISCONNECT packet and no
// response (paho.golang, which sends it anyway, sees its connection end;
// at QoS 1 its Publish call fails once the connection is gone or its
// packet timeout expires). Other connections are unaffected. The
// default limit leaves room for a 96 KiB body, so that a body just over
// the DPS limit is answered 400005 instead.
//
// # Fast path
//
// By default a register request is answered 202 "assigning" and the
// device polls after retry-after (3 s), as on Azure, although the
// operation is already final when the 202 is sent (allocation is
// synchronous). With Options.FastPath the register request of a final
// operation gets the final 200 at once, and CONNECT to assigned takes
// milliseconds instead of seconds. It is off by default because the C#
// v2 (MQTTnet) SDK fails when the register answer is not "assigning";
// the C, embedded C, Node, Python, Java and C# v1 SDKs take the 200 as
// final (they handle register and poll answers alike, and embedded C and
// Java need the operationId, which the 200 carries). An operation that is
// not final is still answered 202. Enable it when no C# v2 device
// provisions against the broker.
//
// # TPM
//
// Options.TPM (tpmdecide.Attester in the broker) takes both legs of TPM
// attestation on the registration topics (PROTOCOL.md §5): the first
// register request with tpm.endorsementKey and tpm.storageRootKey is
// answered 401 with an authenticationKey blob only that TPM can import; the
// answer is a SAS token signed with the imported key, in tpm.sasToken of the
// next register request on the same connection or as the MQTT password of
// a new one (to any broker sharing the store). The pending challenge is
// taken atomically before anything is verified, so every answer consumes
// it; it expires (60 s) and is bound to registration ID, EK and SRK. Every
// refusal of either leg is recorded as a refused event (attestationType
// "tpm"), bounded by the per-connection register limit.
//
// # Events
//
// Every assignment, failed allocation and refusal is appended to the
// store's event log by the Service and published through its Publish
// function; PublishEvent sends it at QoS 1, not retained, on
//
//	$dpsbroker/events/{type}/{registrationId}
//
// with type "assigned", "failed" or "refused" (a registration ID that is
// not a valid one becomes "_"). The payload is provisioning.Event as JSON:
//
//	{"id":"42","type":"assigned","time":"2026-01-02T03:04:05.123Z",
//	 "registrationId":"device-1","deviceId":"device-1","attestationType":"x509",
//	 "enrollmentGroupId":"root-group","assignedHub":"hub-1.example.net",
//	 "operationId":"5.1a2b....","node":"broker-a","explanation":"..."}
//
//	{"id":"43","type":"refused","time":"...","registrationId":"device-4",
//	 "attestationType":"x509","enrollmentGroupId":"group-b","errorCode":401002,
//	 "reason":"groupDisabled","explanation":"...","node":"broker-a"}
//
// Live delivery is best effort (a subscriber whose queue is full misses
// events); consumers that must not miss any read the event log.
package hooks
