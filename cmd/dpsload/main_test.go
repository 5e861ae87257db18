package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/baseline"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/load"
	"github.com/dpsbroker/dpsbroker/cmd/internal/memrelease"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// TestMain lets the test binary stand in for dpsload when dpsload starts
// its baseline broker as a child process (os.Executable is the test
// binary here).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, cancel := context.WithCancel(context.Background())
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
		cancel()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// runLoad runs dpsload in-process and decodes its result file.
func runLoad(t *testing.T, args ...string) (*File, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "result.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, append(args, "--out", out, "--quiet"), &stdout, &stderr, func(string) (string, bool) { return "", false })
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("result file: %v", err)
	}
	return &f, stdout.String()
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCompareAgainstBrokertest is the integration test: a fresh device CA
// enrolled through the admin API, 20 devices at c=4 against the real
// broker, and the same against a baseline broker dpsload starts itself.
func TestCompareAgainstBrokertest(t *testing.T) {
	b := brokertest.New(t)
	caFile := writeTemp(t, "server-ca.pem", b.ServerCA.CertPEM())
	f, stdout := runLoad(t,
		"--broker", b.MQTTAddr(), "--ca-file", caFile, "--id-scope", b.IDScope(),
		"--admin", b.AdminURL(), "--token", b.AdminToken(), "--group-id", "load-test",
		"--metrics", b.HTTPURL()+"/metrics",
		"-n", "20", "-c", "4", "--poll-after", "0",
		"--compare", "--rounds", "1",
	)
	if len(f.Runs) != 2 {
		t.Fatalf("%d runs, want baseline and target", len(f.Runs))
	}
	for _, r := range f.Runs {
		if r.Completed != 20 || r.Errors != 0 || r.TotalErrors != 0 || len(r.ErrorsByReason) != 0 {
			t.Errorf("%s: completed %d, errors %d %v", r.Label, r.Completed, r.Errors, r.ErrorSamples)
		}
		if r.Latency.Count != 20 || r.Rate <= 0 {
			t.Errorf("%s: latency count %d, rate %v", r.Label, r.Latency.Count, r.Rate)
		}
		if r.Server == nil || r.Server.Error != "" {
			t.Errorf("%s: server usage %+v", r.Label, r.Server)
		}
		switch r.Label {
		case "target":
			// 202 then one poll, as the broker does not answer 200 at once.
			if r.Polls != 20 || r.FastAssigned != 0 {
				t.Errorf("target: %d polls, %d fast", r.Polls, r.FastAssigned)
			}
		case "baseline":
			if r.Polls != 0 || r.FastAssigned != 20 {
				t.Errorf("baseline: %d polls, %d fast", r.Polls, r.FastAssigned)
			}
		default:
			t.Errorf("unexpected label %q", r.Label)
		}
	}
	if f.Compare == nil || f.Compare.Rounds != 1 || f.Compare.RateRatio <= 0 {
		t.Errorf("compare %+v", f.Compare)
	}
	if !strings.Contains(stdout, "compare (1 rounds, target/baseline)") {
		t.Errorf("no comparison line")
	}
	for _, a := range f.Args {
		if a == b.AdminToken() {
			t.Error("the admin token is in the result file")
		}
	}
	// The group really exists and admitted the devices.
	regs, err := b.AdminClient().ListRegistrations(context.Background(), "load-test")
	if err != nil || len(regs) != 20 {
		t.Errorf("registrations of the group: %d, %v", len(regs), err)
	}
}

// TestRefusedDevicesAreCounted: devices of a CA the broker does not know
// are refused at CONNECT; every refusal is counted under its reason.
func TestRefusedDevicesAreCounted(t *testing.T) {
	b := brokertest.New(t)
	unknown := pkitest.NewRoot(t).Intermediate(t, "not enrolled")
	caFile := writeTemp(t, "server-ca.pem", b.ServerCA.CertPEM())
	certFile := writeTemp(t, "ca.pem", append(unknown.CertPEM(), pkitest.CertPEM(unknown.Root())...))
	keyFile := writeTemp(t, "ca.key", unknown.KeyPEM())
	for _, tc := range []struct {
		mqtt, reason string
	}{
		{"4", "connack:0x05"},
		{"5", "connack:0x87:401002"},
	} {
		t.Run("mqtt"+tc.mqtt, func(t *testing.T) {
			f, _ := runLoad(t, "--broker", b.MQTTAddr(), "--ca-file", caFile, "--id-scope", b.IDScope(),
				"--ca-cert", certFile, "--ca-key", keyFile, "-n", "8", "-c", "2", "--mqtt", tc.mqtt)
			r := f.Runs[0]
			if r.Completed != 0 || r.Errors != 8 || r.ErrorsByReason[tc.reason] != 8 {
				t.Fatalf("completed %d errors %d by reason %v", r.Completed, r.Errors, r.ErrorsByReason)
			}
		})
	}
}

// TestInProcessBaselineMQTT5 runs against a baseline broker started by
// the test (--baseline-broker), over MQTT 5 with X25519 and resumption.
func TestInProcessBaselineMQTT5(t *testing.T) {
	devRoot := pkitest.NewRoot(t)
	issuer := devRoot.Intermediate(t, "devices")
	serverRoot := pkitest.NewRoot(t)
	server := serverRoot.Server(t)
	cfg, err := baseline.TLSConfig(server.TLSCertificate(), devRoot.Pool(), baseline.KexDefault, true)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := baseline.Start("127.0.0.1:0", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	f, _ := runLoad(t, "--baseline", "--baseline-broker", srv.Addr(),
		"--ca-file", writeTemp(t, "server-ca.pem", serverRoot.CertPEM()),
		"--ca-cert", writeTemp(t, "ca.pem", append(issuer.CertPEM(), devRoot.CertPEM()...)),
		"--ca-key", writeTemp(t, "ca.key", issuer.KeyPEM()),
		"--mqtt", "5", "--curves", "x25519", "--resume", "--devices", "4", "-n", "20", "-c", "4")
	r := f.Runs[0]
	if r.Completed != 20 || r.Errors != 0 {
		t.Fatalf("completed %d errors %d %v", r.Completed, r.Errors, r.ErrorSamples)
	}
	if r.Curves["X25519"] != 20 {
		t.Errorf("curves %v", r.Curves)
	}
	// 4 devices, 20 connections: all but the first of each device resume.
	if r.TLSResumed != 16 {
		t.Errorf("%d resumed handshakes, want 16", r.TLSResumed)
	}
	if srv.Answered() != 20 {
		t.Errorf("baseline answered %d", srv.Answered())
	}
}

func TestValidate(t *testing.T) {
	good := func() options {
		return options{count: 10, concurrency: 1, mqtt: 4, curves: "hybrid", deviceSource: deviceSource{caFile: "ca.pem", admin: "https://127.0.0.1:8443"}, rounds: 3, timeout: time.Second}
	}
	tests := []struct {
		name string
		edit func(*options)
		want string // substring of the error; "" for valid
	}{
		{"valid", func(*options) {}, ""},
		{"unbounded", func(o *options) { o.count = 0 }, "bounded"},
		{"bad mqtt", func(o *options) { o.mqtt = 3 }, "--mqtt 3"},
		{"bad curves", func(o *options) { o.curves = "x448" }, "--curves"},
		{"bad poll-after", func(o *options) { o.pollAfter = "soon" }, "--poll-after"},
		{"no devices source", func(o *options) { o.admin = "" }, "--admin"},
		{"both sources", func(o *options) { o.caCert, o.caKey = "a", "b" }, "exclude"},
		{"half ca", func(o *options) { o.admin, o.caCert = "", "a" }, "go together"},
		{"no trust", func(o *options) { o.caFile = "" }, "--ca-file"},
		{"baseline alone needs nothing", func(o *options) { o.baseline, o.admin, o.caFile = true, "", "" }, ""},
		{"baseline and compare", func(o *options) { o.baseline, o.compare = true, true }, "exclude"},
		{"zero concurrency", func(o *options) { o.concurrency = 0 }, "-c"},
		{"gate with compare", func(o *options) { o.compare, o.startFile, o.startTimeout = true, "s", time.Second }, "not with --compare"},
		{"gate without timeout", func(o *options) { o.startFile = "s" }, "--start-timeout"},
		{"gate", func(o *options) { o.readyFile, o.startFile, o.startTimeout = "r", "s", time.Second }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good()
			tt.edit(&o)
			err := o.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	resolve := func(host string) ([]net.IP, error) {
		switch host {
		case "localhost":
			return []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, nil
		case "mixed":
			return []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}, nil
		case "nowhere":
			return nil, errors.New("no such host")
		}
		if ip := net.ParseIP(host); ip != nil {
			return []net.IP{ip}, nil
		}
		return nil, nil
	}
	tests := []struct {
		addr   string
		remote bool
		ok     bool
	}{
		{"127.0.0.1:8883", false, true},
		{"[::1]:8883", false, true},
		{"localhost:8883", false, true},
		{"127.0.0.2", false, true},
		{"192.168.1.5:8883", false, false},
		{"mixed:8883", false, false},
		{"nowhere:8883", false, false},
		{"empty:8883", false, false},
		{"192.168.1.5:8883", true, true},
	}
	for _, tt := range tests {
		err := checkLoopback(resolve, tt.remote, "--broker", tt.addr)
		if (err == nil) != tt.ok {
			t.Errorf("%s (allow-remote %v): err = %v", tt.addr, tt.remote, err)
		}
	}
}

func TestRemoteTargetRefused(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"--baseline", "--baseline-broker", "192.0.2.1:8883", "--ca-cert", "x", "--ca-key", "y", "--ca-file", "z", "-n", "1"},
		&bytes.Buffer{}, &stderr, func(string) (string, bool) { return "", false })
	if code != exitError || !strings.Contains(stderr.String(), "not loopback") {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
}

func TestRedactArgs(t *testing.T) {
	got := redactArgs([]string{"--token", "s3cret", "-n", "5", "--token=abc", "-token", "x"})
	want := []string{"--token", "REDACTED", "-n", "5", "--token=REDACTED", "-token", "REDACTED"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v", got)
	}
}

func TestComparePairsRounds(t *testing.T) {
	res := func(label string, round int, rate, cpu float64, noisy bool) *load.Result {
		r := &load.Result{Label: label, Round: round, Rate: rate, Server: &load.CPU{PerRegistrationUs: cpu}}
		r.Machine.Noisy = noisy
		return r
	}
	runs := []*load.Result{
		res("baseline", 1, 1000, 1000, false), res("target", 1, 800, 1250, false),
		res("target", 2, 300, 2000, true), res("baseline", 2, 600, 1000, false),
		res("baseline", 3, 900, 1100, false), res("target", 3, 630, 1650, false),
	}
	c := compare(summarize(runs), runs)
	if c.Rounds != 3 || len(c.PairedRate) != 3 || c.CleanRounds != 2 {
		t.Fatalf("%+v", c)
	}
	near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
	if !near(c.PairedRateMedian, 0.7) || !near(c.CleanRateMedian, 0.75) {
		t.Errorf("paired rate median %v, clean %v", c.PairedRateMedian, c.CleanRateMedian)
	}
	if !near(c.CleanServerCPUMedian, 1.375) || !near(c.RateRatio, 630.0/900) {
		t.Errorf("clean cpu %v, rate ratio %v", c.CleanServerCPUMedian, c.RateRatio)
	}
}

// TestIndividualDevices: with --individual every device gets its own
// enrollment and is admitted by it, not by the group.
func TestIndividualDevices(t *testing.T) {
	b := brokertest.New(t)
	caFile := writeTemp(t, "server-ca.pem", b.ServerCA.CertPEM())
	f, _ := runLoad(t,
		"--broker", b.MQTTAddr(), "--ca-file", caFile, "--id-scope", b.IDScope(),
		"--admin", b.AdminURL(), "--token", b.AdminToken(), "--group-id", "load-ind",
		"--individual", "--device-prefix", "ind-", "-n", "12", "-c", "3", "--poll-after", "0",
	)
	if len(f.Runs) != 1 || f.Runs[0].Completed != 12 || f.Runs[0].Errors != 0 {
		t.Fatalf("runs %+v", f.Runs)
	}
	if f.Runs[0].FromConnect.Count != 12 || f.Runs[0].FromConnect.P99Ms <= 0 || f.Runs[0].FromConnect.P99Ms > f.Runs[0].Latency.MaxMs {
		t.Errorf("from-CONNECT latency %+v, whole %+v", f.Runs[0].FromConnect, f.Runs[0].Latency)
	}
	ctx := context.Background()
	e, err := b.AdminClient().GetEnrollment(ctx, "ind-000000")
	if err != nil || !e.Enabled() {
		t.Fatalf("individual enrollment: %v", err)
	}
	r, err := b.AdminClient().GetRegistration(ctx, "ind-000000")
	if err != nil {
		t.Fatal(err)
	}
	if r.EnrollmentGroupID != "" {
		t.Errorf("admitted by group %q, want the individual enrollment", r.EnrollmentGroupID)
	}
}

// TestHold: idle connections are opened in steps and the server's memory
// is read at each; the in-process broker is this test's own process.
func TestHold(t *testing.T) {
	h, _ := holdRun(t, brokertest.New(t), "--levels", "3,6")
	if len(h.Points) != 3 || h.Points[0].Connections != 0 || h.Points[2].Connections != 6 || h.Failed != 0 {
		t.Errorf("points %+v, failed %d %v", h.Points, h.Failed, h.FailedBy)
	}
	for _, p := range h.Points {
		if p.RSSBytes == 0 {
			t.Errorf("no RSS at %d connections", p.Connections)
		}
	}
}

// TestHoldCollect: with --collect the server (this process, which handles
// SIGUSR1 as dpsbroker does) is asked to release memory with none and with
// all connections held, and both readings are in the result.
func TestHoldCollect(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	memrelease.Handle(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h, stdout := holdRun(t, brokertest.New(t), "--levels", "4", "--collect")
	if h.CollectedNone == nil || h.Collected == nil {
		t.Fatalf("no collected readings: %+v", h)
	}
	if h.CollectedNone.Connections != 0 || h.Collected.Connections != 4 || h.Collected.RSSBytes == 0 {
		t.Errorf("collected readings %+v / %+v", *h.CollectedNone, *h.Collected)
	}
	if !strings.Contains(stdout, "after a release") {
		t.Errorf("summary line missing: %s", stdout)
	}
}

// holdRun runs `dpsload hold` with args against b, whose process is this
// test's own, and returns its JSON result and what it printed.
func holdRun(t *testing.T, b *brokertest.Broker, args ...string) (HoldFile, string) {
	t.Helper()
	caFile := writeTemp(t, "server-ca.pem", b.ServerCA.CertPEM())
	out := filepath.Join(t.TempDir(), "hold.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	all := append([]string{"hold", "--broker", b.MQTTAddr(), "--ca-file", caFile, "--id-scope", b.IDScope(),
		"--admin", b.AdminURL(), "--token", b.AdminToken(), "--settle", "10ms", "-c", "2",
		"--server-pid", strconv.Itoa(os.Getpid()), "--out", out}, args...)
	code := run(ctx, all, &stdout, &stderr, func(string) (string, bool) { return "", false })
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var h HoldFile
	if err := json.Unmarshal(data, &h); err != nil {
		t.Fatal(err)
	}
	return h, stdout.String()
}

func TestHoldUsage(t *testing.T) {
	for _, args := range [][]string{
		{"hold"}, // no --ca-file, no --server-pid, no CA
		{"hold", "--ca-file", "x", "--server-pid", "1", "--admin", "https://127.0.0.1:1", "--levels", "5,2"},
		{"hold", "--ca-file", "x", "--server-pid", "1", "--ca-cert", "a", "--ca-key", "b", "--admin", "https://127.0.0.1:1"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), args, io.Discard, &stderr, func(string) (string, bool) { return "", false }); code != exitUsage {
			t.Errorf("%v: exit %d, want usage (%s)", args, code, stderr.String())
		}
	}
}
