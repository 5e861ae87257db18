package tpm

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/tcp"
)

// DefaultDevicePath is the Linux kernel's resource-managed TPM device.
const DefaultDevicePath = "/dev/tpmrm0"

// OpenLinux opens a Linux TPM character device; "" means
// DefaultDevicePath. Prefer /dev/tpmrm0 to /dev/tpm0: the resource manager
// flushes what a crashed process left loaded.
func OpenLinux(path string) (transport.TPMCloser, error) {
	if path == "" {
		path = DefaultDevicePath
	}
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: open %s: %w", path, err)
	}
	return t, nil
}

// OpenTCP connects to a TPM simulator speaking the Microsoft simulator
// protocol at addr ("host:port"), with its control port at port+1, as
// swtpm and the MS simulator use. It does not power the TPM on: swtpm's
// control port speaks swtpm's own protocol, so start swtpm with
// --flags not-need-init,startup-clear. It sends TPM2_Startup(CLEAR) and
// accepts TPM_RC_INITIALIZE (already started).
//
// go-tpm's TCP transport reads each response with a single Read, which is
// fine on loopback; over a slow link a large response could come back
// short.
func OpenTCP(addr string) (transport.TPMCloser, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("tpm: TCP address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p >= 65535 {
		return nil, fmt.Errorf("tpm: TCP address %q: bad port", addr)
	}
	t, err := tcp.Open(tcp.Config{
		CommandAddress:  addr,
		PlatformAddress: net.JoinHostPort(host, strconv.Itoa(p+1)),
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	if err := startup(t); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// startup sends TPM2_Startup(CLEAR); a TPM that is already started answers
// TPM_RC_INITIALIZE, which is fine.
func startup(t transport.TPM) error {
	_, err := tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(t)
	if err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		return fmt.Errorf("tpm: startup: %w", err)
	}
	return nil
}
