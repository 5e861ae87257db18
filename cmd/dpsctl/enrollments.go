package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

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
		"show":    {usage: "ID", help: "show an enrollment with its registration state", run: enrollmentShow},
		"list":    {usage: "", help: "list individual enrollments", run: enrollmentList},
		"enable":  {usage: "ID", help: "enable an enrollment", run: enrollmentSetStatus(provisioning.StatusEnabled)},
		"disable": {usage: "ID", help: "disable an enrollment (its devices are refused at once)", run: enrollmentSetStatus(provisioning.StatusDisabled)},
		"delete":  {usage: "ID [--etag E]", help: "delete an enrollment", run: enrollmentDelete},
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
	c, err := e.client()
	if err != nil {
		return err
	}
	if !replace {
		if err := mustNotExist(c.GetEnrollment(ctx, id)); err != nil {
			return fmt.Errorf("enrollment %q %w", id, err)
		}
	}
	out, err := c.PutEnrollment(ctx, en, "")
	if err != nil {
		return err
	}
	return printJSON(e.stdout, out)
}

// errExists says why create refused; the caller prefixes the entry.
var errExists = errors.New("already exists (use --replace to overwrite it)")

// mustNotExist turns the result of a Get into create's precondition.
func mustNotExist[T any](_ T, err error) error {
	switch {
	case err == nil:
		return errExists
	case errors.Is(err, provisioning.ErrNotFound):
		return nil
	default:
		return err
	}
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

func enrollmentShow(ctx context.Context, e *env, args []string) error {
	pos, err := parse(newFlags(e, "enrollment show"), args, 1, "ID")
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	en, err := c.GetEnrollment(ctx, pos[0])
	if err != nil {
		return err
	}
	return show(e, en, enrollmentHeader, enrollmentRow(en))
}

func enrollmentList(ctx context.Context, e *env, args []string) error {
	if _, err := parse(newFlags(e, "enrollment list"), args, 0); err != nil {
		return err
	}
	if _, err := outputFormat(e, "table"); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	all, err := c.ListEnrollments(ctx)
	if err != nil {
		return err
	}
	return list(e, all, enrollmentHeader, enrollmentRow)
}

// enrollmentSetStatus is a read-modify-write guarded by If-Match, so that a
// concurrent change is never overwritten.
func enrollmentSetStatus(s provisioning.ProvisioningStatus) func(context.Context, *env, []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		pos, err := parse(newFlags(e, "enrollment "+verb(s)), args, 1, "ID")
		if err != nil {
			return err
		}
		c, err := e.client()
		if err != nil {
			return err
		}
		en, err := c.GetEnrollment(ctx, pos[0])
		if err != nil {
			return err
		}
		en.ProvisioningStatus = s
		if _, err := c.PutEnrollment(ctx, en, en.ETag); err != nil {
			return changedConcurrently(err)
		}
		fmt.Fprintf(e.stdout, "enrollment %s %s\n", en.RegistrationID, s)
		return nil
	}
}

func verb(s provisioning.ProvisioningStatus) string {
	if s == provisioning.StatusDisabled {
		return "disable"
	}
	return "enable"
}

// changedConcurrently explains a 412 of a read-modify-write.
func changedConcurrently(err error) error {
	if errors.Is(err, provisioning.ErrPreconditionFailed) {
		return fmt.Errorf("the entry changed while this command ran; run it again: %w", err)
	}
	return err
}

func enrollmentDelete(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "enrollment delete")
	etag := fs.String("etag", "", "delete only if the entry still has this etag")
	pos, err := parse(fs, args, 1, "ID")
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if err := c.DeleteEnrollment(ctx, pos[0], *etag); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "enrollment %s deleted\n", pos[0])
	return nil
}
