// Package tpm is the device side of TPM attestation (PROTOCOL.md §4): it
// reads or creates the endorsement key (EK) and storage root key (SRK),
// imports the HMAC key of a DPS authenticationKey blob
// (ActivateAndImport), and signs SAS tokens with it inside the TPM
// (SignSAS). It also offers a TPM-resident ECDSA key as a crypto.Signer for
// X.509 devices (NewSigner; kept as SRK-wrapped blobs for LoadSigner, or
// at a persistent handle with PersistSigner and PersistentSigner), and
// reads EK certificates from NV.
//
// A Device talks to any go-tpm transport: a Linux TPM (OpenLinux, through
// the kernel resource manager /dev/tpmrm0), a TPM simulator over TCP such
// as swtpm (OpenTCP), or the in-process simulator of clients/tpm/tpmsim
// (tests only).
//
// Without a resource manager the TPM holds only about three transient
// objects, so a Device keeps at most the SRK (and the EK until the first
// activation) loaded and loads other keys only for the command that uses
// them (notes/tpm-blob.md pitfall 15). One Device per TPM: commands of one
// Device are serialised, but two Devices on one TPM would flush each
// other's objects.
package tpm
