package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/mqttraw"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// intList is a repeatable integer flag.
type intList []int

func (l *intList) String() string { return fmt.Sprint([]int(*l)) }
func (l *intList) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("not a process ID: %q", v)
	}
	*l = append(*l, n)
	return nil
}

// deviceSource says where the simulated devices come from (an enrolled CA,
// or a fresh one enrolled through the admin API) and how they check the
// broker's certificate: the flags a load run and "dpsload hold" share.
type deviceSource struct {
	caFile       string
	serverName   string
	idScope      string
	caCert       string
	caKey        string
	admin        string
	token        string
	groupID      string
	devicePrefix string
}

// register defines the flags of d; groupID and prefix are the defaults
// that keep one subcommand's devices apart from another's.
func (d *deviceSource) register(fs *flag.FlagSet, groupID, prefix string) {
	fs.StringVar(&d.caFile, "ca-file", "", "PEM `file` of the roots that sign the brokers' (and the admin API's) server certificates")
	fs.StringVar(&d.serverName, "server-name", "", "TLS server `name` to verify (default: the broker's host, or localhost for an IP)")
	fs.StringVar(&d.idScope, "id-scope", defaultIDScope, "DPS ID `scope` in the username")
	fs.StringVar(&d.caCert, "ca-cert", "", "PEM `file` of a CA that issues the devices (its certificate first, then those above it); already enrolled on the target")
	fs.StringVar(&d.caKey, "ca-key", "", "PEM `file` of the --ca-cert key")
	fs.StringVar(&d.admin, "admin", "", "admin API base `URL` (https://127.0.0.1:8443): create a fresh device CA and enroll it as a group")
	fs.StringVar(&d.token, "token", "", "admin API bearer `token` (default: $DPSLOAD_ADMIN_TOKEN, then $DPSBROKER_ADMIN_TOKEN)")
	fs.StringVar(&d.groupID, "group-id", groupID, "enrollment group `ID` created with --admin (replaced if it exists)")
	fs.StringVar(&d.devicePrefix, "device-prefix", prefix, "registration ID `prefix` of the devices")
}

// tokenFromEnv fills in the admin token from the environment when no
// --token was given (so that it need not appear on a command line).
func (d *deviceSource) tokenFromEnv(env func(string) (string, bool)) {
	if d.token != "" {
		return
	}
	for _, k := range []string{"DPSLOAD_ADMIN_TOKEN", "DPSBROKER_ADMIN_TOKEN"} {
		if v, ok := env(k); ok && v != "" {
			d.token = v
			return
		}
	}
}

// options are the command line of a load run.
type options struct {
	brokers listFlag
	deviceSource
	devices    int
	individual bool

	count       int
	duration    time.Duration
	warmup      time.Duration
	warmupSet   bool
	concurrency int
	rate        float64
	mqtt        int
	pollAfter   string
	timeout     time.Duration
	curves      string
	resume      bool

	metrics    listFlag
	serverPIDs intList
	peerPIDs   intList

	baseline       bool
	baselineBroker string
	baselinePIDs   intList
	baselineKex    string
	baselineCert   string
	baselineKey    string
	compare        bool
	rounds         int
	idleWait       time.Duration
	readyFile      string
	startFile      string
	startTimeout   time.Duration

	out         string
	quiet       bool
	allowRemote bool
}

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("dpsload", flag.ContinueOnError)
	fs.Var(&o.brokers, "broker", "target broker MQTT-over-TLS `host:port` (repeatable: round-robin; default 127.0.0.1:8883)")
	o.deviceSource.register(fs, "dpsload", "dpsload-")
	fs.IntVar(&o.devices, "devices", 0, "distinct device identities, minted before the run (default: -n, at most 1000, at least -c)")
	fs.BoolVar(&o.individual, "individual", false, "also enroll every device individually (its own leaf) through --admin, so that the broker decides it by its individual enrollment")

	fs.IntVar(&o.count, "n", 0, "provisionings to start in a run (0: bounded by --duration only)")
	fs.DurationVar(&o.duration, "duration", 0, "measured window of a run, after the warm-up (0: until -n are done)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up before the measured window (default 1s; 0 when only -n bounds the run)")
	fs.IntVar(&o.concurrency, "c", 16, "provisionings in flight at most")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: start provisionings at this `rate` per second (0: closed loop)")
	fs.IntVar(&o.mqtt, "mqtt", 4, "MQTT protocol `level`: 4 (3.1.1, what the DPS SDKs speak) or 5")
	fs.StringVar(&o.pollAfter, "poll-after", "", "wait this `duration` before each poll instead of the broker's retry-after (0 polls at once)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on one whole provisioning")
	fs.StringVar(&o.curves, "curves", "hybrid", "TLS 1.3 key exchange offered: hybrid (X25519MLKEM768, Go's default), x25519 or p256")
	fs.BoolVar(&o.resume, "resume", false, "resume each device's previous TLS session (needs session tickets on the broker)")

	fs.Var(&o.metrics, "metrics", "Prometheus `URL` of a target broker (/metrics), sampled for server CPU and RSS (repeatable, summed)")
	fs.Var(&o.serverPIDs, "server-pid", "`pid` of a server-side process (broker, redis-server) whose CPU and RSS count (repeatable, summed)")
	fs.Var(&o.peerPIDs, "peer-pid", "`pid` of a process loaded on purpose in the same window (another broker under test): its CPU is not counted as the host's noise (repeatable)")

	fs.BoolVar(&o.baseline, "baseline", false, "run against the baseline (plain mochi, same TLS, no provisioning) instead of the target")
	fs.StringVar(&o.baselineBroker, "baseline-broker", "", "use a running baseline at `host:port` (dpsload serve-baseline) instead of starting one")
	fs.Var(&o.baselinePIDs, "baseline-pid", "`pid` of the --baseline-broker process, for its CPU (repeatable)")
	fs.StringVar(&o.baselineKex, "baseline-kex", "default", "key exchange of the started baseline, as the broker's --key-exchange: default, x25519, p256")
	fs.StringVar(&o.baselineCert, "baseline-tls-cert", "", "server certificate `file` for the started baseline (the broker's own, for identical TLS; default: a fresh one)")
	fs.StringVar(&o.baselineKey, "baseline-tls-key", "", "key `file` of --baseline-tls-cert")
	fs.BoolVar(&o.compare, "compare", false, "alternate baseline and target runs for --rounds rounds and report the ratio of medians")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of --compare")
	fs.DurationVar(&o.idleWait, "idle-wait", 0, "before each run, wait up to this long for the machine to be under 8 % busy")
	fs.StringVar(&o.readyFile, "ready-file", "", "start gate: create this `file` once prepared (after --idle-wait), before the run")
	fs.StringVar(&o.startFile, "start-file", "", "start gate: begin the run only once this `file` exists (a driver starting several dpsloads at once)")
	fs.DurationVar(&o.startTimeout, "start-timeout", 2*time.Minute, "give up when --start-file has not appeared after this long")

	fs.StringVar(&o.out, "out", "", "write the JSON result to `file`")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow targets that are not loopback addresses")
	return fs
}

// validate checks the options on their own, before anything is resolved
// or started.
func (o *options) validate() error {
	var errs []error
	if o.count < 0 || o.duration < 0 || o.warmup < 0 || o.rate < 0 || o.devices < 0 {
		errs = append(errs, errors.New("-n, --duration, --warmup, --rate and --devices must not be negative"))
	}
	if o.count == 0 && o.duration == 0 {
		errs = append(errs, errors.New("give -n or --duration: a run must be bounded"))
	}
	if o.concurrency < 1 {
		errs = append(errs, errors.New("-c must be at least 1"))
	}
	if o.mqtt != int(mqttraw.V311) && o.mqtt != int(mqttraw.V5) {
		errs = append(errs, fmt.Errorf("--mqtt %d: 4 or 5", o.mqtt))
	}
	if _, err := curvePrefs(o.curves); err != nil {
		errs = append(errs, err)
	}
	if o.pollAfter != "" {
		if d, err := time.ParseDuration(o.pollAfter); err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("--poll-after %q: a non-negative duration", o.pollAfter))
		}
	}
	if (o.caCert == "") != (o.caKey == "") {
		errs = append(errs, errors.New("--ca-cert and --ca-key go together"))
	}
	if o.caCert != "" && o.admin != "" {
		errs = append(errs, errors.New("--ca-cert and --admin exclude each other: the CA is either yours (enrolled already) or created and enrolled by dpsload"))
	}
	if o.individual && o.admin == "" {
		errs = append(errs, errors.New("--individual needs --admin: the enrollments are created through the admin API"))
	}
	if (o.baselineCert == "") != (o.baselineKey == "") {
		errs = append(errs, errors.New("--baseline-tls-cert and --baseline-tls-key go together"))
	}
	if o.baseline && o.compare {
		errs = append(errs, errors.New("--baseline and --compare exclude each other"))
	}
	if (o.readyFile != "" || o.startFile != "") && o.compare {
		errs = append(errs, errors.New("--ready-file/--start-file gate a single run: not with --compare"))
	}
	if o.startFile != "" && o.startTimeout <= 0 {
		errs = append(errs, errors.New("--start-timeout must be positive"))
	}
	if o.compare && o.rounds < 1 {
		errs = append(errs, errors.New("--rounds must be at least 1"))
	}
	if o.usesTarget() && o.caCert == "" && o.admin == "" {
		errs = append(errs, errors.New("the target needs enrolled devices: give --admin (and --token) or --ca-cert/--ca-key of an enrolled CA"))
	}
	if o.usesTarget() && o.caFile == "" {
		errs = append(errs, errors.New("--ca-file is required to verify the target broker"))
	}
	if o.baselineBroker != "" && o.caCert == "" {
		errs = append(errs, errors.New("--baseline-broker needs --ca-cert/--ca-key: the CA the running baseline trusts"))
	}
	if o.baselineBroker != "" && o.caFile == "" && o.baselineCert == "" {
		errs = append(errs, errors.New("--baseline-broker needs --ca-file to verify its server certificate"))
	}
	return errors.Join(errs...)
}

func (o *options) usesTarget() bool { return !o.baseline }
func (o *options) usesBaseline() bool {
	return o.baseline || o.compare
}

// checkLoopback refuses addresses that are not loopback unless
// --allow-remote: this machine may only load-test itself.
func checkLoopback(resolve func(host string) ([]net.IP, error), allowRemote bool, what, hostport string) error {
	if allowRemote {
		return nil
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	ips, err := resolve(host)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, hostport, err)
	}
	if len(ips) == 0 {
		return fmt.Errorf("%s %q: no address", what, hostport)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s %q resolves to %s, which is not loopback: refusing without --allow-remote", what, hostport, ip)
		}
	}
	return nil
}

func urlHost(what, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%s %q: not an absolute URL", what, raw)
	}
	return u.Hostname(), nil
}
