package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// Names in the development PKI.
const (
	// DevGroupID is the enrollment group created for the development
	// devices CA on first run.
	DevGroupID = "dev-devices"
	// DevDeviceID is the registration ID of the example device.
	DevDeviceID = "dev-device-1"
)

// DevPKI is the development PKI the broker creates in DataDir/pki when no
// server certificate is configured: a root CA, a server certificate for
// localhost (and DevHosts), an intermediate "devices" CA with an enabled
// enrollment group, and one example device. Everything in it is for
// development only; production brokers get TLSCert and TLSKey.
type DevPKI struct {
	// Dir holds the files below.
	Dir string
	// RootCert is the CA devices trust for the server (and that signs
	// the devices CA).
	RootCert string
	// ServerCert (chain) and ServerKey are the broker's TLS identity.
	ServerCert, ServerKey string
	// DevicesCACert and DevicesCAKey issue more development devices; the
	// enrollment group DevGroupID admits their devices.
	DevicesCACert, DevicesCAKey string
	// DeviceCert (leaf + devices CA) and DeviceKey are the example device
	// DevDeviceID.
	DeviceCert, DeviceKey string
	// Created is true when this run created the files.
	Created bool

	devicesCAPEM []byte
}

func devPKIPaths(dir string) *DevPKI {
	return &DevPKI{
		Dir:           dir,
		RootCert:      filepath.Join(dir, "root.pem"),
		ServerCert:    filepath.Join(dir, "server.pem"),
		ServerKey:     filepath.Join(dir, "server.key"),
		DevicesCACert: filepath.Join(dir, "devices-ca.pem"),
		DevicesCAKey:  filepath.Join(dir, "devices-ca.key"),
		DeviceCert:    filepath.Join(dir, DevDeviceID+".pem"),
		DeviceKey:     filepath.Join(dir, DevDeviceID+".key"),
	}
}

// ensureDevPKI loads the development PKI from dir, or creates it when the
// directory has none. A half-written one (a crash during creation) is an
// error that names the directory to remove, never silently replaced: the
// root may already be installed on devices.
func ensureDevPKI(dir string, extraHosts []string) (*DevPKI, error) {
	p := devPKIPaths(dir)
	files := []string{p.RootCert, p.ServerCert, p.ServerKey, p.DevicesCACert, p.DevicesCAKey, p.DeviceCert, p.DeviceKey}
	present := 0
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			present++
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("development PKI: %w", err)
		}
	}
	switch present {
	case len(files):
		return p, nil
	case 0:
	default:
		return nil, fmt.Errorf("development PKI in %s is incomplete (%d of %d files); remove the directory to create a new one", dir, present, len(files))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("development PKI: %w", err)
	}
	root, err := pkitest.NewRootCA("dpsbroker development root")
	if err != nil {
		return nil, err
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && provisioning.ValidateHostName(h) == nil && h != "localhost" {
		hosts = append(hosts, h)
	}
	for _, h := range extraHosts {
		if net.ParseIP(h) != nil || provisioning.ValidateHostName(h) == nil {
			hosts = append(hosts, h)
		}
	}
	server, err := root.NewServerLeaf(hosts)
	if err != nil {
		return nil, err
	}
	devCA, err := root.NewIntermediate("dpsbroker development devices CA", pkitest.MaxPathLen(0))
	if err != nil {
		return nil, err
	}
	dev, err := devCA.NewLeaf(DevDeviceID)
	if err != nil {
		return nil, err
	}
	serverKey, err := pkitest.KeyPEM(server.Key)
	if err != nil {
		return nil, err
	}
	devKey, err := pkitest.KeyPEM(dev.Key)
	if err != nil {
		return nil, err
	}
	caKey, err := pkitest.KeyPEM(devCA.Key)
	if err != nil {
		return nil, err
	}
	writes := []struct {
		path   string
		data   []byte
		secret bool
	}{
		{p.RootCert, root.CertPEM(), false},
		{p.DevicesCACert, devCA.CertPEM(), false},
		{p.DevicesCAKey, caKey, true},
		{p.DeviceCert, dev.ChainPEM(), false},
		{p.DeviceKey, devKey, true},
		{p.ServerKey, serverKey, true},
		// Last: its presence marks a complete PKI for ensureDevPKI.
		{p.ServerCert, server.ChainPEM(), false},
	}
	for _, w := range writes {
		mode := fs.FileMode(0o644)
		if w.secret {
			mode = 0o600
		}
		if err := writeFileAtomic(w.path, w.data, mode); err != nil {
			return nil, fmt.Errorf("development PKI: %w", err)
		}
	}
	// The root key is not kept: nothing more needs to be signed by it,
	// and a key that does not exist cannot leak. The devices CA key is
	// kept so that developers can issue more devices.
	p.Created = true
	p.devicesCAPEM = devCA.CertPEM()
	return p, nil
}

// enrollDevGroup creates the enabled enrollment group of the development
// devices CA, so that the example device provisions on first run.
func (p *DevPKI) enrollDevGroup(ctx context.Context, st provisioning.GroupStore) error {
	g := &provisioning.EnrollmentGroup{
		EnrollmentGroupID: DevGroupID,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{
				SigningCertificates: &provisioning.X509Certificates{
					Primary: &provisioning.X509CertificateWithInfo{Certificate: string(p.devicesCAPEM)},
				},
			},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: provisioning.StatusEnabled},
	}
	if _, err := st.PutEnrollmentGroup(ctx, g, ""); err != nil {
		return fmt.Errorf("development enrollment group: %w", err)
	}
	return nil
}

// loadOrCreateToken returns the admin token from path, creating a random
// one (mode 0600) when the file does not exist. created tells the caller
// to say where it is; the token itself is never logged.
func loadOrCreateToken(path string) (token string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		t := strings.TrimSpace(string(b))
		if len(t) < 16 {
			return "", false, fmt.Errorf("admin token file %s: token shorter than 16 characters", path)
		}
		return t, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("admin token file: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, err
	}
	t := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("admin token file: %w", err)
	}
	if err := writeFileAtomic(path, []byte(t+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("admin token file: %w", err)
	}
	return t, true, nil
}

// writeFileAtomic writes through a temporary file and a rename, so that a
// crash never leaves a truncated key or certificate behind.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after a successful rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(name, path)
}
