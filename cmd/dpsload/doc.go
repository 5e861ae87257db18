// Command dpsload is the load generator of dpsbroker: it provisions
// simulated X.509 devices against one or more brokers over MQTT and TLS,
// the way device SDKs do, and reports honest figures: the rate, a latency
// distribution, errors by reason, and the CPU each side spent per
// registration, always alongside a baseline measured the same way.
//
// # What one provisioning is
//
// TCP connect, a full mutual-TLS handshake (the device verifies the
// broker's chain; the broker checks the device's leaf + intermediate),
// CONNECT (client ID = registration ID = certificate CN, DPS username),
// SUBSCRIBE $dps/registrations/res/#, PUBLISH (QoS 1) the register
// request, then PUBACK and the response. On 202 the device waits the
// broker's retry-after (or --poll-after) and polls until the answer is
// final; 200 "assigned" is a success, and a broker that answers 200 at
// once is handled too. Then DISCONNECT and close. The client is a
// minimal raw MQTT 3.1.1/5 codec (internal/mqttraw), because paho costs
// more CPU per provisioning than the broker's MQTT work
// (notes/perf-baselines.md).
//
// Device certificates are minted before the run (key generation is not
// measured) under a CA that dpsload either creates and enrolls as a group
// through the admin API (--admin, --token, --group-id), or is given
// (--ca-cert/--ca-key, a CA already enrolled on the broker). Devices are
// used by one connection at a time and re-register when a run has more
// provisionings than devices. The Credential interface of internal/load
// is the seam for TPM and symmetric-key devices, not implemented yet.
//
// # Bounds and safety
//
// A run is bounded by a count (-n) and/or a measured window (--duration,
// after --warmup); every provisioning by --timeout. Targets must be
// loopback addresses (brokers, admin API, metrics) unless --allow-remote:
// this machine may only load-test itself. Closed loop by default (-c
// workers, each starting the next provisioning when its last ends); open
// loop with --rate, where latency counts from the scheduled start, so a
// broker that falls behind shows it.
//
// # Measurements
//
// A progress line every second on stderr (rate, totals, errors, p50 and
// p99 of that second), one summary line per run on stdout, and with --out
// a JSON file: rate, latency percentiles and the histogram buckets
// (log-linear, <1 % error), errors by reason ("connack:0x87:401002",
// "connack:0x05", "dps:401:401002", "dps:failed:400208", "timeout:tls",
// "tls-alert:...", "closed:register", ...), negotiated key exchanges and
// resumed handshakes, the server's CPU per registration and RSS (from
// --server-pid, any number of processes summed, e.g. the broker and
// redis-server; or from --metrics, process_cpu_seconds_total and
// process_resident_memory_bytes), the load generator's own CPU, the CPU
// used by neither ("otherCores"; a run over 0.12 core is flagged noisy),
// and the machine.
//
// # The baseline
//
// --baseline runs against plain mochi-mqtt with the same TLS (server
// certificate via --baseline-tls-cert/--baseline-tls-key, client
// certificates required and verified against the same device CA, the
// same key exchange via --baseline-kex, tickets when --resume) and no
// provisioning: connect, subscribe, one request, one 200 answer written
// to that connection. dpsload starts it as a child process so that its
// CPU is its own, or uses one started with "dpsload serve-baseline"
// (--baseline-broker, --baseline-pid). --compare alternates baseline and
// target for --rounds rounds (ABBA order) and prints the ratio of the
// medians: publish figures as such ratios, since absolute rates on a
// shared machine drift by ±20 %.
//
// The baseline verifies the full chain in the handshake on every
// connection; dpsbroker caches verified CA links, so its chain work can
// be lower. The target's flow has a second round trip (202, then poll)
// that the baseline does not: that difference is part of what provisioning
// costs.
//
// # Several generators at once
//
// --ready-file and --start-file form a start gate: the process prepares
// (mints, enrolls, waits for an idle machine), creates the ready file and
// begins its run only once the start file exists. A driver that starts two
// dpsloads against two brokers and creates the start file when both are
// ready measures both brokers in the same window, which cancels the
// host's drift exactly instead of on average (dpsbench's fleet-size part).
//
// # Examples
//
// Embedded store: a development broker (its first run writes the dev PKI
// to .dpsbroker/pki and the admin token to .dpsbroker/admin-token), then
// three interleaved rounds of baseline and broker, 10 s each, polling at
// once instead of waiting the 3 s retry-after:
//
//	dpsbroker --mqtt-addr 127.0.0.1:8883 --ws-addr '' --http-addr 127.0.0.1:8080 &
//	export DPSLOAD_ADMIN_TOKEN=$(cat .dpsbroker/admin-token)
//	dpsload --broker 127.0.0.1:8883 --ca-file .dpsbroker/pki/root.pem \
//	    --admin https://127.0.0.1:8443 --server-pid $(pgrep -n dpsbroker) \
//	    --baseline-tls-cert .dpsbroker/pki/server.pem --baseline-tls-key .dpsbroker/pki/server.key \
//	    -c 16 --duration 10s --poll-after 0 --compare --rounds 3 --idle-wait 20s --out embedded.json
//
// Instead of --admin, the dev PKI's own devices CA (enrolled as group
// "dev-devices") works too: --ca-cert .dpsbroker/pki/devices-ca.pem
// --ca-key .dpsbroker/pki/devices-ca.key. Instead of --server-pid,
// --metrics http://127.0.0.1:8080/metrics reads the same figures from the
// broker's Prometheus endpoint.
//
// Redis: two brokers sharing one Redis (and one server certificate), load
// spread round-robin, Redis's CPU counted as server CPU:
//
//	redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no &
//	dpsbroker --redis-addr 127.0.0.1:6390 --data-dir a --mqtt-addr 127.0.0.1:8883 \
//	    --ws-addr '' --http-addr 127.0.0.1:8080 &
//	dpsbroker --redis-addr 127.0.0.1:6390 --data-dir b --mqtt-addr 127.0.0.1:8885 \
//	    --ws-addr '' --http-addr 127.0.0.1:8081 --admin-addr '' \
//	    --tls-cert a/pki/server.pem --tls-key a/pki/server.key &
//	DPSLOAD_ADMIN_TOKEN=$(cat a/admin-token) dpsload \
//	    --broker 127.0.0.1:8883 --broker 127.0.0.1:8885 --ca-file a/pki/root.pem \
//	    --admin https://127.0.0.1:8443 \
//	    --server-pid $PID_A --server-pid $PID_B --server-pid $(pgrep -n redis-server) \
//	    -c 32 --duration 10s --poll-after 0 --compare --out redis.json
//
// Open loop at 500 provisionings/s for 20 s with MQTT 5, X25519 only and
// TLS resumption:
//
//	dpsload ... --rate 500 --duration 20s --mqtt 5 --curves x25519 --resume
//
// Without --poll-after, each device waits the broker's retry-after (3 s by
// default) before polling, as real devices do: the rate is then bounded by
// -c / retry-after, which measures the protocol, not the broker.
//
// Individually enrolled devices: --individual (with --admin) also creates an
// individual enrollment holding each device's own leaf, through the bulk
// endpoint, before the run; the broker then decides each device by that
// enrollment (a positive individual lookup) instead of walking its chain to
// the group:
//
//	dpsload ... --admin https://127.0.0.1:8443 --individual --device-prefix ind-
//
// # Idle memory
//
// "dpsload hold" opens device connections (TCP, mTLS, CONNECT with a long
// keep-alive, then nothing) in steps and reads the server's resident memory
// from /proc at each step (and Go heap, stacks and goroutines from --metrics),
// reporting the bytes one idle device costs:
//
//	dpsload hold --broker 127.0.0.1:8883 --ca-file .dpsbroker/pki/root.pem \
//	    --ca-cert .dpsbroker/pki/devices-ca.pem --ca-key .dpsbroker/pki/devices-ca.key \
//	    --server-pid $(pgrep -n dpsbroker) --metrics http://127.0.0.1:8080/metrics \
//	    --levels 1000,2000,5000 --out hold.json
//
// With --collect it also reads the server's memory after a release, with
// none and with all connections held: it sends every --server-pid SIGUSR1,
// on which dpsbroker and "dpsload serve-baseline" collect garbage until
// their stacks stop shrinking and return free pages to the OS, and waits
// for the RSS to settle. That is the memory the idle devices need, without
// the collector's slack, and how notes/perf-baselines.md measured mochi.
//
// Each level needs as many file descriptors on both sides (ulimit -n).
// cmd/dpsbench runs these, and the comparisons above, as one benchmark plan
// and writes BENCHMARKS.md.
package main
