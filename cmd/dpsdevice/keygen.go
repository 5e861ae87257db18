package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/provisioning"
)

// keygenFlags are the flags of "dpsdevice x509 keygen".
type keygenFlags struct {
	tpmPath, registrationID, csrFile string
	persistHandle, keyBlob           string
	srkType                          string
	timeout                          time.Duration

	handle tpm2.TPMHandle
	srk    tpm.KeyType
}

// runKeygen creates the device's TLS key inside the TPM and writes a CSR
// for it. The private key never leaves the TPM: it is either persisted at
// a handle, or saved wrapped by the SRK.
func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f keygenFlags
	fs := newFlagSet("dpsdevice x509 keygen", stderr)
	fs.StringVar(&f.tpmPath, "tpm", tpm.DefaultDevicePath, tpmPathHelp)
	fs.StringVar(&f.registrationID, "registration-id", "", "registration ID, the CSR's subject CN (required)")
	fs.StringVar(&f.registrationID, "cn", "", "same as --registration-id")
	fs.StringVar(&f.csrFile, "csr", "", "PEM file to write the certificate signing request to (required)")
	fs.StringVar(&f.persistHandle, "persist-handle", "", "keep the key in the TPM at this owner persistent handle, e.g. 0x81000002 (must be free)")
	fs.StringVar(&f.keyBlob, "key-blob", "", "or: write the key, wrapped by this TPM's storage root key, to this new file (useless without this TPM)")
	fs.StringVar(&f.srkType, "srk-type", "ecc", "storage root key type when none is persisted at 0x81000001: ecc or rsa")
	fs.DurationVar(&f.timeout, "timeout", 60*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: dpsdevice x509 keygen [--tpm sim|/dev/tpmrm0|tcp:HOST:PORT] --registration-id ID --csr dev.csr
           (--persist-handle 0x81000002 | --key-blob dev.tpmkey)

Creates an ECDSA P-256 key inside the TPM (it is never exported) and writes a
CSR for it. Have the CSR signed by the enrollment group's CA, then provision:

  dpsdevice x509 --tpm ... --tpm-key 0x81000002|dev.tpmkey --cert dev.pem \
      --broker HOST:PORT --id-scope SCOPE [--ca root.pem]

`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, f.check, stderr); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if err := f.run(ctx, stdout); err != nil {
		fmt.Fprintf(stderr, "dpsdevice: %v\n", err)
		return exitError
	}
	return exitOK
}

func (f *keygenFlags) check(rest []string) error {
	if err := requireFlags(rest, [2]string{"--registration-id", f.registrationID}, [2]string{"--csr", f.csrFile}, [2]string{"--tpm", f.tpmPath}); err != nil {
		return err
	}
	var err error
	switch {
	case (f.persistHandle == "") == (f.keyBlob == ""):
		return errors.New("give exactly one of --persist-handle and --key-blob: where the TPM key is kept")
	case f.timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	if err := provisioning.ValidateRegistrationID(f.registrationID, provisioning.MaxX509RegistrationIDLen); err != nil {
		return fmt.Errorf("--registration-id: %w", err)
	}
	if f.srk, err = parseKeyType(f.srkType); err != nil {
		return fmt.Errorf("--srk-type %w", err)
	}
	if f.persistHandle != "" {
		if f.handle, err = parseHandle(f.persistHandle); err != nil {
			return fmt.Errorf("--persist-handle: %w", err)
		}
	}
	return nil
}

// run creates the key and writes the CSR, then stores the key. A CSR
// whose key could not be stored is removed: it would certify nothing.
func (f *keygenFlags) run(ctx context.Context, stdout io.Writer) (err error) {
	var blobFile *os.File
	if f.keyBlob != "" {
		// Refuse an existing file before the TPM does any work.
		if blobFile, err = createKeyFile(f.keyBlob); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				blobFile.Close()
				os.Remove(f.keyBlob)
			}
		}()
	}
	d, closeTPM, err := openDevice(ctx, f.tpmPath, x509KeyOptions(f.srk))
	if err != nil {
		return err
	}
	defer closeTPM()
	s, err := d.NewSigner(ctx)
	if err != nil {
		return err
	}
	csr, err := s.CertificateRequest(f.registrationID)
	if err != nil {
		return err
	}
	if err := os.WriteFile(f.csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), 0o644); err != nil {
		return fmt.Errorf("write CSR: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.csrFile)
		}
	}()

	var stored, ref string
	if blobFile != nil {
		if _, err := blobFile.Write(encodeKeyBlob(d, f.srk, s)); err != nil {
			return fmt.Errorf("write %s: %w", f.keyBlob, err)
		}
		if err := blobFile.Sync(); err != nil {
			return fmt.Errorf("write %s: %w", f.keyBlob, err)
		}
		if err := blobFile.Close(); err != nil {
			return fmt.Errorf("write %s: %w", f.keyBlob, err)
		}
		stored, ref = "key file "+f.keyBlob+" (wrapped by this TPM's storage root key; useless elsewhere)", f.keyBlob
	} else {
		if err := d.PersistSigner(ctx, s, f.handle); err != nil {
			return err
		}
		ref = fmt.Sprintf("0x%08x", uint32(f.handle))
		stored = "TPM persistent handle " + ref
	}
	// The key is stored: from here on nothing is undone.
	fmt.Fprintf(stdout, `TPM key:  ECDSA P-256 %s, created in the TPM, never exported
kept at:  %s
CSR:      %s (CN %q)
Have the CSR signed by the enrollment group's CA, then provision with:
  dpsdevice x509 --tpm %s --tpm-key %s --cert DEVICE.pem --broker HOST:PORT --id-scope SCOPE
`, device.KeyFingerprint(s.Public()), stored, f.csrFile, f.registrationID, f.tpmPath, ref)
	return nil
}
