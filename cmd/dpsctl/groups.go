package main

import (
	"context"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func groupCommands() map[string]command {
	return map[string]command{
		"create": {
			usage: "--id G (--cert ca.pem [--secondary-cert f] | --ca-ref NAME [--secondary-ca-ref NAME] | --symmetric-key [--primary-key K]) [--tpm] [--disabled] [--hub H ...] [--policy P] [--edge] [--replace]",
			help:  "create an enrollment group (fails if it exists, unless --replace)",
			run:   groupCreate,
		},
		"show":    {usage: "G", help: "show an enrollment group", run: groups.show},
		"list":    {usage: "", help: "list enrollment groups", run: groups.listCmd},
		"enable":  {usage: "G", help: "enable a group", run: groups.setStatus(provisioning.StatusEnabled)},
		"disable": {usage: "G", help: "disable a group (its devices are refused at once)", run: groups.setStatus(provisioning.StatusDisabled)},
		"delete":  {usage: "G [--etag E]", help: "delete a group (its registration records stay)", run: groups.delete},
	}
}

func groupCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "group create")
	var (
		id, cert, secondCert, caRef, secondCARef string
		replace, tpmGroup                        bool
		pf                                       policyFlags
		kf                                       keyFlags
	)
	fs.StringVar(&id, "id", "", "enrollment group ID")
	fs.StringVar(&cert, "cert", "", "signing (CA) certificate PEM file")
	fs.StringVar(&secondCert, "secondary-cert", "", "secondary signing certificate PEM file")
	fs.StringVar(&caRef, "ca-ref", "", "name of an uploaded, verified CA certificate")
	fs.StringVar(&secondCARef, "secondary-ca-ref", "", "name of a second CA certificate")
	fs.BoolVar(&replace, "replace", false, "replace an existing group")
	fs.BoolVar(&tpmGroup, "tpm", false, "a TPM group: --cert or --ca-ref is the manufacturer CA of the devices' EK certificates")
	pf.register(fs)
	kf.register(fs)
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if id == "" {
		return usagef("--id is required")
	}
	g := &provisioning.EnrollmentGroup{EnrollmentGroupID: id}
	switch n := countTrue(cert != "", caRef != "", kf.set()); {
	case n != 1:
		return usagef("choose exactly one attestation: --cert, --ca-ref or --symmetric-key")
	case secondCert != "" && cert == "":
		return usagef("--secondary-cert needs --cert")
	case secondCARef != "" && caRef == "":
		return usagef("--secondary-ca-ref needs --ca-ref")
	case tpmGroup && kf.set():
		return usagef("--tpm needs the manufacturer CA: --cert or --ca-ref, not --symmetric-key")
	case cert != "":
		cs, err := certificates(cert, secondCert)
		if err != nil {
			return err
		}
		g.Attestation = provisioning.AttestationMechanism{Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{SigningCertificates: cs}}
	case caRef != "":
		g.Attestation = provisioning.AttestationMechanism{Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{CAReferences: &provisioning.X509CAReferences{Primary: caRef, Secondary: secondCARef}}}
	default:
		g.Attestation = kf.attestation()
	}
	if tpmGroup {
		// dpsbroker's TPM groups: the x509 sub-object names the CA.
		g.Attestation.Type = provisioning.AttestationTPM
	}
	pf.apply(&g.EnrollmentPolicy)
	return groups.create(ctx, e, id, g, replace)
}
