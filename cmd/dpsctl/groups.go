package main

import (
	"context"
	"fmt"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func groupCommands() map[string]command {
	return map[string]command{
		"create": {
			usage: "--id G (--cert ca.pem [--secondary-cert f] | --ca-ref NAME [--secondary-ca-ref NAME] | --symmetric-key [--primary-key K]) [--tpm] [--disabled] [--hub H ...] [--policy P] [--edge] [--replace]",
			help:  "create an enrollment group (fails if it exists, unless --replace)",
			run:   groupCreate,
		},
		"show":    {usage: "G", help: "show an enrollment group", run: groupShow},
		"list":    {usage: "", help: "list enrollment groups", run: groupList},
		"enable":  {usage: "G", help: "enable a group", run: groupSetStatus(provisioning.StatusEnabled)},
		"disable": {usage: "G", help: "disable a group (its devices are refused at once)", run: groupSetStatus(provisioning.StatusDisabled)},
		"delete":  {usage: "G [--etag E]", help: "delete a group (its registration records stay)", run: groupDelete},
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
	c, err := e.client()
	if err != nil {
		return err
	}
	if !replace {
		if err := mustNotExist(c.GetEnrollmentGroup(ctx, id)); err != nil {
			return fmt.Errorf("group %q %w", id, err)
		}
	}
	out, err := c.PutEnrollmentGroup(ctx, g, "")
	if err != nil {
		return err
	}
	return printJSON(e.stdout, out)
}

func groupShow(ctx context.Context, e *env, args []string) error {
	pos, err := parse(newFlags(e, "group show"), args, 1, "G")
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	g, err := c.GetEnrollmentGroup(ctx, pos[0])
	if err != nil {
		return err
	}
	return show(e, g, groupHeader, groupRow(g))
}

func groupList(ctx context.Context, e *env, args []string) error {
	if _, err := parse(newFlags(e, "group list"), args, 0); err != nil {
		return err
	}
	if _, err := outputFormat(e, "table"); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	all, err := c.ListEnrollmentGroups(ctx)
	if err != nil {
		return err
	}
	return list(e, all, groupHeader, groupRow)
}

func groupSetStatus(s provisioning.ProvisioningStatus) func(context.Context, *env, []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		pos, err := parse(newFlags(e, "group "+verb(s)), args, 1, "G")
		if err != nil {
			return err
		}
		c, err := e.client()
		if err != nil {
			return err
		}
		g, err := c.GetEnrollmentGroup(ctx, pos[0])
		if err != nil {
			return err
		}
		g.ProvisioningStatus = s
		if _, err := c.PutEnrollmentGroup(ctx, g, g.ETag); err != nil {
			return changedConcurrently(err)
		}
		fmt.Fprintf(e.stdout, "group %s %s\n", g.EnrollmentGroupID, s)
		return nil
	}
}

func groupDelete(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "group delete")
	etag := fs.String("etag", "", "delete only if the group still has this etag")
	pos, err := parse(fs, args, 1, "G")
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if err := c.DeleteEnrollmentGroup(ctx, pos[0], *etag); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "group %s deleted\n", pos[0])
	return nil
}
