// Package broker assembles a complete dpsbroker: the store (embedded or
// Redis), the X.509 evaluator, hub allocation, the provisioning service and
// hooks on an embedded mochi MQTT server, its TLS and secure WebSocket
// listeners, the HTTPS admin API, health and metrics endpoints, and
// graceful shutdown. cmd/dpsbroker is a thin command around it; programs
// that embed the broker use New, Start or Run, and Shutdown.
//
// # Configuration
//
// Config holds every setting. The command reads them, in increasing
// precedence, from DefaultConfig, a JSON file whose keys are the flag names
// (LoadFile), DPSBROKER_* environment variables (ApplyEnv) and flags
// (RegisterFlags). Validate reports every problem at once.
//
//	setting                  default          meaning
//	data-dir                 .dpsbroker       embedded store, development PKI, admin token
//	mqtt-addr                :8883            MQTT over TLS ("" disables)
//	ws-addr                  :8884            MQTT over secure WebSocket, any path ("" disables)
//	admin-addr               127.0.0.1:8443   HTTPS admin API ("" disables)
//	http-addr                :8080            /healthz, /readyz, /metrics in plain HTTP ("" disables)
//	id-scope                 0ne00000000      the ID scope in device usernames
//	redis-addr, redis-db     (embedded)       shared Redis store for several brokers
//	tls-cert, tls-key        (dev PKI)        server certificate chain and key, PEM
//	dev-host                                  extra names for the development server certificate
//	hub                      hub.example.net  linked IoT hub HOST[=WEIGHT], repeatable
//	service-ca                                CAs whose client certificates mark event subscribers
//	admin-token-file         data-dir/admin-token
//	retry-after              3s               on every 202 and 429
//	request-timeout          5s               store work of one device request
//	operation-ttl            10m              how long an operation can be polled
//	tpm-challenge-ttl        60s              how long a TPM device has to answer its (single-use) challenge
//	max-packet-size          102400           larger packets close that connection only
//	connect-timeout          10s              TLS + CONNECT must finish within it
//	max-connections          50000            over all listeners (0: no cap)
//	max-connections-per-ip   0                per client IP (0: no cap)
//	key-exchange             default          default (= hybrid) | x25519 | p256
//	session-tickets          false            TLS resumption for returning devices
//	fast-path                false            answer register with the final 200 (no 202 + poll)
//	shutdown-timeout         15s              drain of live sessions on shutdown
//	log-level, log-format    info, text       debug|info|warn|error, text|json
//
// Secrets are read from the environment only, never from flags or the
// file: DPSBROKER_ADMIN_TOKEN (admin API bearer token), DPSBROKER_SERVICE_TOKEN
// (password of back-end subscribers that connect as user "service") and
// DPSBROKER_REDIS_PASSWORD.
//
// # First run
//
// Without tls-cert and tls-key the broker creates a development PKI in
// data-dir/pki: a root CA, a server certificate for localhost, 127.0.0.1,
// ::1, the host name and every dev-host, a "devices" intermediate CA with
// an enabled enrollment group DevGroupID, and an example device
// DevDeviceID. Without an admin token it writes a random one to
// data-dir/admin-token (mode 0600) and logs only the file's path. The
// development PKI is for development: production brokers get a real
// server certificate.
//
// # Devices and TLS
//
// Devices connect with MQTT 3.1.1 or 5 over TLS 1.2+ on mqtt-addr, or over
// a secure WebSocket on ws-addr (any path; the Azure SDKs differ). The
// server requests a client certificate but does not verify it at TLS time:
// the connect hook takes the X.509 decision against the enrollments and
// refuses with a DPS error code in the CONNACK reason string (MQTT 5
// 0x87 "401002 enrollment group disabled"; MQTT 3.1.1 return code 5).
//
// key-exchange trades post-quantum protection for speed: "default" keeps
// Go's preference (X25519MLKEM768 first); "x25519" or "p256" make TLS 1.3
// handshakes about 30-40 % cheaper on small machines but leave recorded
// sessions open to a future quantum computer.
//
// session-tickets lets a device that reconnects resume its TLS session:
// in TLS 1.3 Go still runs the key exchange but skips the certificate
// signatures (about 1.5-1.7x handshakes per second for returning
// devices); first-time provisioning gains nothing. The resumed session
// carries the device's chain as first presented, and the connect hook
// decides again on every connection, so enrollment changes still apply.
// The ticket keys live in memory and rotate; brokers behind one balancer
// do not share them, so a device resumes only on the broker that issued
// its ticket.
//
// # Fast path
//
// By default a register request is answered 202 "assigning" with
// retry-after, and the device polls after that delay (3 s): CONNECT to
// assigned takes seconds, as on Azure. With fast-path the register
// request is answered at once with the final 200 (assigned or failed),
// and provisioning takes one round trip. The C, embedded C, Node, Python,
// Java and C# v1 SDKs accept that; the C# v2 (MQTTnet) SDK fails unless
// the register answer is "assigning", so enable fast-path only when no
// such devices provision here.
//
// # Limits
//
// Every connection must complete TLS and send CONNECT within
// connect-timeout (mochi sets no deadline before CONNECT, so a silent
// connection would otherwise be held forever). max-connections and
// max-connections-per-ip are enforced at accept time, before TLS, over
// both listeners. Behind a TCP load balancer all connections come from the
// balancer's address, so leave max-connections-per-ip at 0 there.
// A packet over max-packet-size closes only that connection; the limit is
// announced to MQTT 5 clients in CONNACK.
//
// # Several brokers
//
// Brokers that share one Redis (redis-addr, same id-scope and redis-db)
// are one service: a device may register on one and poll on another, and
// an enrollment change made through any admin API reaches every broker's
// live sessions through the store's change feed: a changed individual
// enrollment disconnects that device's sessions; a changed group or CA
// certificate re-decides every live X.509 session and disconnects those
// no longer admitted. Put a TCP load balancer in front (deploy/ has an
// haproxy configuration) and point its health check at /readyz.
//
// # Operations endpoints (http-addr, no authentication, no secrets)
//
//	/healthz   200 while the process serves
//	/readyz    200 when the store answers and the broker is not shutting down
//	/metrics   Prometheus: dpsbroker_provisioning_events_total{outcome,attestation,code},
//	           dpsbroker_decision_seconds{result}, dpsbroker_store_call_seconds{op,result},
//	           dpsbroker_connections_{accepted_total,rejected_total,open}{listener[,reason]},
//	           dpsbroker_sessions_disconnected_total{kind}, Go and process collectors
//
// # Shutdown
//
// On SIGINT or SIGTERM (Run's context ending) the broker stops accepting
// connections and reports not ready, lets live sessions finish for up to
// shutdown-timeout, closes the rest, waits for requests in progress to
// finish their store work, then closes the store. A device is told
// "assigned" only after its registration record and operation are
// written, so nothing acknowledged is lost when a session is cut.
package broker
