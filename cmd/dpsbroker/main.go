// Command dpsbroker runs the device provisioning broker: an MQTT broker
// that speaks the Azure DPS dialect, decides X.509 devices against
// enrollments, and assigns them to IoT hubs.
//
//	dpsbroker [serve] [flags]     run the broker (the default)
//	dpsbroker demo [flags]        the seed story, live, with real MQTT devices
//	dpsbroker version             print the version
//
// Configuration comes from, in increasing precedence: the built-in
// defaults, a JSON file (--config FILE, or DPSBROKER_CONFIG), environment
// variables DPSBROKER_<SETTING> (DPSBROKER_MQTT_ADDR, ...), and flags.
// Secrets come from the environment only: DPSBROKER_ADMIN_TOKEN,
// DPSBROKER_SERVICE_TOKEN, DPSBROKER_REDIS_PASSWORD. Run "dpsbroker serve
// -h" for every setting; the package documentation of
// github.com/dpsbroker/dpsbroker/broker describes them in full.
//
// With nothing configured, the first run creates a development PKI and an
// admin token under the data directory (.dpsbroker) and prints how to
// provision the example device.
//
// SIGINT or SIGTERM stops the broker gracefully: no new connections, live
// sessions get up to --shutdown-timeout to finish, then the store closes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/cmd/internal/memrelease"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stderr, env)
	case "demo":
		return demo(ctx, args, stdout, stderr, env)
	case "version":
		fmt.Fprintln(stdout, "dpsbroker", versionString())
		return exitOK
	case "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "dpsbroker: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

const usage = `Usage:
  dpsbroker [serve] [flags]   run the broker (dpsbroker serve -h lists the flags)
  dpsbroker demo [flags]      the seed story live: root group, group B disabled, device 3 disabled
  dpsbroker version           print the version
`

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// loadConfig layers defaults, the config file, the environment and the
// flags. The flags are parsed twice: once to find --config, then over the
// loaded configuration, so that they win.
func loadConfig(name string, args []string, env func(string) (string, bool), stderr io.Writer, extra func(*flag.FlagSet)) (broker.Config, error) {
	newFlags := func(cfg *broker.Config, configPath *string) *flag.FlagSet {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		cfg.RegisterFlags(fs)
		fs.StringVar(configPath, "config", "", "JSON configuration file (keys are the flag names)")
		if extra != nil {
			extra(fs)
		}
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "Usage: dpsbroker %s [flags]\n\nEvery flag can also be set as DPSBROKER_<NAME> (upper case, - as _) or in the --config file.\nSecrets only from the environment: DPSBROKER_ADMIN_TOKEN, DPSBROKER_SERVICE_TOKEN, DPSBROKER_REDIS_PASSWORD.\n\n", name)
			fs.PrintDefaults()
		}
		return fs
	}
	probe := broker.DefaultConfig()
	var configPath string
	pfs := newFlags(&probe, &configPath)
	pfs.SetOutput(io.Discard) // errors are reported once, by the caller
	if err := pfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			pfs.SetOutput(stderr)
			pfs.Usage()
		}
		return broker.Config{}, err
	}
	if configPath == "" {
		configPath, _ = env(broker.EnvPrefix + "CONFIG")
	}
	cfg := broker.DefaultConfig()
	var errs []error
	if configPath != "" {
		if err := cfg.LoadFile(configPath); err != nil {
			errs = append(errs, err)
		}
	}
	if err := cfg.ApplyEnv(env); err != nil {
		errs = append(errs, err)
	}
	var ignored string
	fs := newFlags(&cfg, &ignored)
	fs.SetOutput(io.Discard) // already reported by the first parse
	if err := fs.Parse(args); err != nil {
		errs = append(errs, err)
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " ")))
	}
	return cfg, errors.Join(errs...)
}

func serve(ctx context.Context, args []string, stderr io.Writer, env func(string) (string, bool)) int {
	cfg, err := loadConfig("serve", args, env, stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "dpsbroker: %v\nRun 'dpsbroker serve -h' for the flags.\n", err)
		return exitUsage
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "dpsbroker: invalid configuration:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return exitUsage
	}
	logger, err := broker.NewLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "dpsbroker: %v\n", err)
		return exitUsage
	}
	b, err := broker.New(ctx, cfg, logger)
	if err != nil {
		logger.Error("cannot start", "error", err)
		return exitError
	}
	if p := b.DevPKI(); p != nil && p.Created {
		printFirstRun(stderr, b)
	}
	// SIGUSR1: collect and return free memory to the OS (deploy/README.md).
	memrelease.Handle(ctx, logger)
	if err := b.Run(ctx); err != nil {
		logger.Error("stopped with an error", "error", err)
		return exitError
	}
	return exitOK
}

// printFirstRun tells a new user how to provision the example device.
// It names the token file, never the token.
func printFirstRun(w io.Writer, b *broker.Broker) {
	p := b.DevPKI()
	cfg := b.Config()
	target := localTarget(b.MQTTAddr())
	fmt.Fprintf(w, `
dpsbroker: first run: created a development setup (for development only)
  PKI directory:        %s
  root CA for devices:  %s
  example device:       %s (%s, %s)
  enrollment group:     %q admits every device issued by %s
  ID scope:             %s
`, p.Dir, p.RootCert, broker.DevDeviceID, p.DeviceCert, p.DeviceKey, broker.DevGroupID, p.DevicesCACert, cfg.IDScope)
	if f, _ := b.AdminTokenFile(); f != "" {
		fmt.Fprintf(w, "  admin API:            https://%s (bearer token in %s)\n", localTarget(b.AdminAddr()), f)
	}
	if target == "" {
		return
	}
	host, port, _ := net.SplitHostPort(target)
	user := cfg.IDScope + "/registrations/" + broker.DevDeviceID + "/api-version=2019-03-31"
	fmt.Fprintf(w, `
Provision the example device:
  dpsdevice x509 --broker %s --id-scope %s --cert %s --key %s --ca %s
`, target, cfg.IDScope, p.DeviceCert, p.DeviceKey, p.RootCert)
	f, _ := b.AdminTokenFile()
	if f == "" || b.AdminAddr() == "" {
		return
	}
	// mosquitto_rr cannot subscribe to the response filter (it refuses a
	// wildcard response topic), so the recipe registers with mosquitto_pub
	// and reads the result from the admin API.
	fmt.Fprintf(w, `
or with mosquitto-clients and curl: send the register request, then read the registration record:
  mosquitto_pub -V mqttv311 -h %s -p %s --cafile %s --cert %s --key %s \
    -i %s -u '%s' -q 1 \
    -t '$dps/registrations/PUT/iotdps-register/?$rid=1' -m '{"registrationId":"%s"}'
  curl --cacert %s -H "Authorization: Bearer $(cat %s)" https://%s/registrations/%s

`, host, port, p.RootCert, p.DeviceCert, p.DeviceKey, broker.DevDeviceID, user, broker.DevDeviceID,
		p.RootCert, f, localTarget(b.AdminAddr()), broker.DevDeviceID)
}

// localTarget turns a bound address into one a local client can dial and
// verify against the development server certificate (localhost).
func localTarget(addr string) string {
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && (ip.IsUnspecified() || ip.IsLoopback())) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
