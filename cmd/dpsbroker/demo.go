package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/service"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// demoTarget is where the demo runs: a broker it started, or one named by
// flags.
type demoTarget struct {
	mqttAddr string
	idScope  string
	roots    *x509.CertPool
	admin    *service.Client
	stop     func()
}

// demo plays the seed story (x509-attestation.txt) against a live broker:
// five devices under root -> A (1-3) and root -> B (4-5); then a group
// for the root, enabled; then a disabled group for B; then a disabled
// individual enrollment for device 3. After each step every device
// provisions over its own MQTT connection and the outcome is printed.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokerAddr := fs.String("broker", "", "MQTT address of a running broker (default: start one in-process)")
	adminURL := fs.String("admin", "", "admin API base URL of that broker, e.g. https://localhost:8443")
	caFile := fs.String("ca", "", "PEM file of the CA that signed that broker's server certificate")
	idScope := fs.String("id-scope", broker.DefaultIDScope, "ID scope of that broker")
	tokenFile := fs.String("admin-token-file", "", "file with the admin token (default: "+broker.EnvName("admin-token")+")")
	prefix := fs.String("prefix", "demo-", "prefix of the registration and group IDs the demo creates")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: dpsbroker demo [--broker HOST:PORT --admin URL --ca FILE [--id-scope S] [--admin-token-file F]]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	var t *demoTarget
	var err error
	if *brokerAddr == "" {
		t, err = startDemoBroker(ctx, stderr)
	} else {
		t, err = remoteTarget(*brokerAddr, *adminURL, *caFile, *idScope, *tokenFile, env)
	}
	if err != nil {
		fmt.Fprintf(stderr, "dpsbroker demo: %v\n", err)
		return exitError
	}
	defer t.stop()
	if err := playSeedStory(ctx, t, *prefix, stdout); err != nil {
		fmt.Fprintf(stderr, "dpsbroker demo: %v\n", err)
		return exitError
	}
	return exitOK
}

// startDemoBroker runs a throwaway broker on loopback with its own server
// certificate and a temporary embedded store.
func startDemoBroker(ctx context.Context, stderr io.Writer) (*demoTarget, error) {
	dir, err := os.MkdirTemp("", "dpsbroker-demo-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	ca, err := pkitest.NewRootCA("dpsbroker demo server root")
	if err != nil {
		cleanup()
		return nil, err
	}
	srvLeaf, err := ca.NewServerLeaf(nil)
	if err != nil {
		cleanup()
		return nil, err
	}
	key, err := pkitest.KeyPEM(srvLeaf.Key)
	if err != nil {
		cleanup()
		return nil, err
	}
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, srvLeaf.ChainPEM(), 0o600); err != nil {
		cleanup()
		return nil, err
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		cleanup()
		return nil, err
	}
	token, err := randomToken()
	if err != nil {
		cleanup()
		return nil, err
	}
	cfg := broker.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.MQTTAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.WSAddr, cfg.HTTPAddr = "", ""
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
	cfg.AdminToken = token
	cfg.RetryAfter = time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.Hubs = broker.HubList{{HostName: "hub-1.example.net", Weight: 1}, {HostName: "hub-2.example.net", Weight: 1}}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	b, err := broker.New(ctx, cfg, logger)
	if err != nil {
		cleanup()
		return nil, err
	}
	if err := b.Start(); err != nil {
		_ = b.Shutdown(ctx)
		cleanup()
		return nil, err
	}
	roots := ca.Pool()
	return &demoTarget{
		mqttAddr: localTarget(b.MQTTAddr()),
		idScope:  cfg.IDScope,
		roots:    roots,
		admin:    service.New("https://"+localTarget(b.AdminAddr()), token, httpClient(roots)),
		stop: func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Shutdown(sctx)
			cleanup()
		},
	}, nil
}

func remoteTarget(addr, adminURL, caFile, idScope, tokenFile string, env func(string) (string, bool)) (*demoTarget, error) {
	if adminURL == "" {
		return nil, errors.New("--broker needs --admin (the demo enrolls through the admin API)")
	}
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
	}
	token, _ := env(broker.EnvName("admin-token"))
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, err
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, fmt.Errorf("no admin token: set %s or --admin-token-file", broker.EnvName("admin-token"))
	}
	return &demoTarget{
		mqttAddr: addr,
		idScope:  idScope,
		roots:    roots,
		admin:    service.New(adminURL, token, httpClient(roots)),
		stop:     func() {},
	}, nil
}

func httpClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}
}

func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

type demoDevice struct {
	id    string
	path  string // "root -> A"
	leaf  *pkitest.Leaf
	ident tls.Certificate
}

// playSeedStory builds the hierarchy, runs the stages and removes the
// entries it created.
func playSeedStory(ctx context.Context, t *demoTarget, prefix string, w io.Writer) error {
	root, err := pkitest.NewRootCA("dpsbroker demo root")
	if err != nil {
		return err
	}
	inter := map[string]*pkitest.CA{}
	for _, n := range []string{"A", "B"} {
		if inter[n], err = root.NewIntermediate("dpsbroker demo certificate " + n); err != nil {
			return err
		}
	}
	var devs []*demoDevice
	for i := 1; i <= 5; i++ {
		n := "A"
		if i > 3 {
			n = "B"
		}
		id := fmt.Sprintf("%sdevice-%d", prefix, i)
		leaf, err := inter[n].NewLeaf(id)
		if err != nil {
			return err
		}
		devs = append(devs, &demoDevice{id: id, path: "root -> " + n, leaf: leaf, ident: leaf.TLSCertificate()})
	}
	rootGroup, bGroup := prefix+"seed-root", prefix+"seed-b"
	device3 := devs[2]
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = t.admin.DeleteEnrollment(cctx, device3.id, "")
		_ = t.admin.DeleteEnrollmentGroup(cctx, bGroup, "")
		_ = t.admin.DeleteEnrollmentGroup(cctx, rootGroup, "")
	}()

	stages := []struct {
		title string
		apply func() error
	}{
		{"Nothing enrolled yet", func() error { return nil }},
		{fmt.Sprintf("Enrollment group %q for the root certificate, enabled", rootGroup), func() error {
			return putGroup(ctx, t.admin, rootGroup, root.Cert, provisioning.StatusEnabled)
		}},
		{fmt.Sprintf("Certificate B is compromised: enrollment group %q for B, disabled", bGroup), func() error {
			return putGroup(ctx, t.admin, bGroup, inter["B"].Cert, provisioning.StatusDisabled)
		}},
		{fmt.Sprintf("Device 3 is compromised: individual enrollment %q for its certificate, disabled", device3.id), func() error {
			e := &provisioning.IndividualEnrollment{
				RegistrationID: device3.id,
				Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationX509, X509: &provisioning.X509Attestation{
					ClientCertificates: &provisioning.X509Certificates{Primary: &provisioning.X509CertificateWithInfo{Certificate: string(device3.leaf.CertPEM())}},
				}},
				EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: provisioning.StatusDisabled},
			}
			_, err := t.admin.PutEnrollment(ctx, e, "")
			return err
		}},
	}
	fmt.Fprintf(w, "The seed story, live against %s (ID scope %s): five devices, root -> A -> 1..3 and root -> B -> 4..5.\n", t.mqttAddr, t.idScope)
	for i, st := range stages {
		if err := st.apply(); err != nil {
			return fmt.Errorf("stage %d: %w", i, err)
		}
		fmt.Fprintf(w, "\n%d. %s\n", i, st.title)
		results := provisionAll(ctx, t, devs)
		for j, d := range devs {
			fmt.Fprintf(w, "   %-22s %-10s %s\n", d.id, d.path, results[j])
		}
	}
	return nil
}

func putGroup(ctx context.Context, c *service.Client, id string, cert *x509.Certificate, status provisioning.ProvisioningStatus) error {
	g := &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationX509, X509: &provisioning.X509Attestation{
			SigningCertificates: &provisioning.X509Certificates{Primary: &provisioning.X509CertificateWithInfo{Certificate: string(pkitest.CertPEM(cert))}},
		}},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status},
	}
	_, err := c.PutEnrollmentGroup(ctx, g, "")
	return err
}

// provisionAll provisions every device at once, each over its own MQTT
// connection, and describes each outcome.
func provisionAll(ctx context.Context, t *demoTarget, devs []*demoDevice) []string {
	out := make([]string, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res, err := device.Provision(pctx, device.Config{
				Broker:      t.mqttAddr,
				IDScope:     t.idScope,
				Certificate: &d.ident,
				TLSConfig:   &tls.Config{RootCAs: t.roots},
				MaxAttempts: 3,
			})
			var ce *device.ConnectError
			switch {
			case err == nil:
				out[i] = "provisioned -> " + res.AssignedHub
			case errors.As(err, &ce):
				out[i] = "refused: " + ce.Reason
			default:
				out[i] = "error: " + err.Error()
			}
		})
	}
	wg.Wait()
	return out
}
