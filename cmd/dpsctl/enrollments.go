package main

import (
	"context"
	"flag"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// policyFlags are the allocation flags enrollments and groups share.
type policyFlags struct {
	disabled bool
	hubs     stringList
	policy   string
	edge     bool
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&p.disabled, "disabled", false, "create the entry disabled")
	fs.Var(&p.hubs, "hub", "IoT hub host name (repeatable)")
	fs.StringVar(&p.policy, "policy", "", "allocation policy: hashed, static or geoLatency")
	fs.BoolVar(&p.edge, "edge", false, "the device is an IoT Edge device")
}

func (p *policyFlags) apply(ep *provisioning.EnrollmentPolicy) {
	ep.ProvisioningStatus = provisioning.StatusEnabled
	if p.disabled {
		ep.ProvisioningStatus = provisioning.StatusDisabled
	}
	ep.IoTHubs = p.hubs
	ep.AllocationPolicy = provisioning.AllocationPolicy(p.policy)
	if p.edge {
		ep.Capabilities = &provisioning.DeviceCapabilities{IoTEdge: true}
	}
}

// keyFlags select symmetric-key attestation.
type keyFlags struct {
	symmetric               bool
	primaryKey, secondaryKy string
}

func (k *keyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&k.symmetric, "symmetric-key", false, "symmetric-key attestation (keys are generated unless given)")
	fs.StringVar(&k.primaryKey, "primary-key", "", "base64 primary key (implies --symmetric-key)")
	fs.StringVar(&k.secondaryKy, "secondary-key", "", "base64 secondary key (implies --symmetric-key)")
}

func (k *keyFlags) set() bool { return k.symmetric || k.primaryKey != "" || k.secondaryKy != "" }

func (k *keyFlags) attestation() provisioning.AttestationMechanism {
	return provisioning.AttestationMechanism{Type: provisioning.AttestationSymmetricKey,
		SymmetricKey: &provisioning.SymmetricKeyAttestation{PrimaryKey: k.primaryKey, SecondaryKey: k.secondaryKy}}
}

// certificates reads --cert and --secondary-cert.
func certificates(primary, secondary string) (*provisioning.X509Certificates, error) {
	p, err := readPEMFile("cert", primary)
	if err != nil {
		return nil, err
	}
	cs := &provisioning.X509Certificates{Primary: &provisioning.X509CertificateWithInfo{Certificate: p}}
	if secondary != "" {
		s, err := readPEMFile("secondary-cert", secondary)
		if err != nil {
			return nil, err
		}
		cs.Secondary = &provisioning.X509CertificateWithInfo{Certificate: s}
	}
	return cs, nil
}

func enrollmentCommands() map[string]command {
	return map[string]command{
		"create": {
			usage: "--id ID (--cert dev.pem [--secondary-cert f] | --symmetric-key [--primary-key K] | --tpm-ek B64 [--tpm-srk B64]) [--device-id D] [--disabled] [--hub H ...] [--policy static|hashed|geoLatency] [--edge] [--replace]",
			help:  "create an individual enrollment (fails if it exists, unless --replace)",
			run:   enrollmentCreate,
		},
		"show":    {usage: "ID", help: "show an enrollment with its registration state", run: enrollments.show},
		"list":    {usage: "", help: "list individual enrollments", run: enrollments.listCmd},
		"enable":  {usage: "ID", help: "enable an enrollment", run: enrollments.setStatus(provisioning.StatusEnabled)},
		"disable": {usage: "ID", help: "disable an enrollment (its devices are refused at once)", run: enrollments.setStatus(provisioning.StatusDisabled)},
		"delete":  {usage: "ID [--etag E]", help: "delete an enrollment", run: enrollments.delete},
	}
}

func enrollmentCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "enrollment create")
	var (
		id, cert, secondCert, ek, srk, deviceID string
		replace                                 bool
		pf                                      policyFlags
		kf                                      keyFlags
	)
	fs.StringVar(&id, "id", "", "registration ID (for X.509: the certificate CN)")
	fs.StringVar(&cert, "cert", "", "device certificate PEM file (X.509 attestation)")
	fs.StringVar(&secondCert, "secondary-cert", "", "secondary device certificate PEM file")
	fs.StringVar(&ek, "tpm-ek", "", "base64 TPM endorsement key (TPM attestation)")
	fs.StringVar(&srk, "tpm-srk", "", "base64 TPM storage root key")
	fs.StringVar(&deviceID, "device-id", "", "device ID (default: the registration ID)")
	fs.BoolVar(&replace, "replace", false, "replace an existing enrollment")
	pf.register(fs)
	kf.register(fs)
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if id == "" {
		return usagef("--id is required")
	}
	en := &provisioning.IndividualEnrollment{RegistrationID: id, DeviceID: deviceID}
	switch n := countTrue(cert != "", kf.set(), ek != ""); {
	case n != 1:
		return usagef("choose exactly one attestation: --cert, --symmetric-key or --tpm-ek")
	case cert != "":
		cs, err := certificates(cert, secondCert)
		if err != nil {
			return err
		}
		en.Attestation = provisioning.AttestationMechanism{Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{ClientCertificates: cs}}
	case kf.set():
		en.Attestation = kf.attestation()
	default:
		en.Attestation = provisioning.AttestationMechanism{Type: provisioning.AttestationTPM,
			TPM: &provisioning.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}}
	}
	if secondCert != "" && cert == "" {
		return usagef("--secondary-cert needs --cert")
	}
	pf.apply(&en.EnrollmentPolicy)
	return enrollments.create(ctx, e, id, en, replace)
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
