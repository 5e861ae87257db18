package main

import (
	"context"
	"fmt"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func registrationCommands() map[string]command {
	return map[string]command{
		"show":   {usage: "ID", help: "show the registration record of a device", run: registrations.show},
		"list":   {usage: "[--group G]", help: "list registration records (of one group)", run: registrations.listCmd},
		"delete": {usage: "ID [--etag E]", help: "delete a registration record (the device registers afresh)", run: registrations.delete},
	}
}

func caCommands() map[string]command {
	return map[string]command{
		"upload": {usage: "--name N --cert ca.pem [--verified] [--replace]",
			help: "upload a CA certificate (--verified self-attests possession of its key)", run: caUpload},
		"show":   {usage: "NAME", help: "show a CA certificate", run: caCertificates.show},
		"list":   {usage: "", help: "list CA certificates", run: caCertificates.listCmd},
		"delete": {usage: "NAME [--etag E]", help: "delete a CA certificate", run: caCertificates.delete},
		"verification-code": {usage: "NAME",
			help: "generate a proof-of-possession code: issue a certificate with this CN, signed by the CA's key, then run 'ca verify'", run: caVerificationCode},
		"verify": {usage: "NAME --cert proof.pem", help: "prove possession of the CA's key with a certificate whose CN is the verification code", run: caVerify},
	}
}

func caUpload(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "ca upload")
	name := fs.String("name", "", "name groups reference the certificate by")
	cert := fs.String("cert", "", "CA certificate PEM file")
	verified := fs.Bool("verified", false, "mark verified without proof of possession")
	replace := fs.Bool("replace", false, "replace an existing certificate")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *name == "" || *cert == "" {
		return usagef("--name and --cert are required")
	}
	pemText, err := readPEMFile("cert", *cert)
	if err != nil {
		return err
	}
	return caCertificates.create(ctx, e, *name, &provisioning.CACertificate{Name: *name, Certificate: pemText, IsVerified: *verified}, *replace)
}

// caVerificationCode prints only the code (with -o json, the certificate),
// so that scripts can use it as the CN directly.
func caVerificationCode(ctx context.Context, e *env, args []string) error {
	pos, err := parse(newFlags(e, "ca verification-code"), args, 1, "NAME")
	if err != nil {
		return err
	}
	format, err := outputFormat(e, "table")
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ca, err := c.GetCACertificate(ctx, pos[0])
	if err != nil {
		return err
	}
	out, err := c.GenerateVerificationCode(ctx, pos[0], ca.ETag)
	if err != nil {
		return changedConcurrently(err)
	}
	if format == "json" {
		return printJSON(e.stdout, out)
	}
	fmt.Fprintln(e.stdout, out.VerificationCode)
	return nil
}

func caVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "ca verify")
	cert := fs.String("cert", "", "PEM file of the proof certificate (CN = verification code, signed by the CA)")
	pos, err := parse(fs, args, 1, "NAME")
	if err != nil {
		return err
	}
	if *cert == "" {
		return usagef("--cert is required")
	}
	pemText, err := readPEMFile("cert", *cert)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	out, err := c.VerifyCACertificate(ctx, pos[0], "", pemText)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "CA certificate %s verified (thumbprint %s)\n", out.Name, out.Thumbprint)
	return nil
}
