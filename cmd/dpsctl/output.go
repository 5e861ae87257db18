package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i, c := range r {
			if c == "" {
				r[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// show prints one entity as JSON, or as the one-row table of its list.
func show(e *env, v any, header []string, row []string) error {
	format, err := outputFormat(e, "json")
	if err != nil {
		return err
	}
	if format == "table" {
		return table(e.stdout, header, [][]string{row})
	}
	return printJSON(e.stdout, v)
}

// list prints entities as a table, or as a JSON array.
func list[T any](e *env, items []T, header []string, row func(T) []string) error {
	format, err := outputFormat(e, "table")
	if err != nil {
		return err
	}
	if format == "json" {
		if items == nil {
			items = []T{}
		}
		return printJSON(e.stdout, items)
	}
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		rows = append(rows, row(it))
	}
	return table(e.stdout, header, rows)
}

func status(p provisioning.EnrollmentPolicy) string {
	if p.Enabled() {
		return string(provisioning.StatusEnabled)
	}
	return string(provisioning.StatusDisabled)
}

func hubs(p provisioning.EnrollmentPolicy) string {
	if len(p.IoTHubs) > 0 {
		return strings.Join(p.IoTHubs, ",")
	}
	return p.IoTHubHostName
}

func when(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

var enrollmentHeader = []string{"REGISTRATION ID", "ATTESTATION", "STATUS", "DEVICE ID", "ALLOCATION", "HUBS", "UPDATED"}

func enrollmentRow(x *provisioning.IndividualEnrollment) []string {
	return []string{x.RegistrationID, string(x.Attestation.Type), status(x.EnrollmentPolicy), x.DeviceID,
		string(x.AllocationPolicy), hubs(x.EnrollmentPolicy), when(x.LastUpdatedDateTimeUTC)}
}

var groupHeader = []string{"GROUP ID", "ATTESTATION", "SIGNER", "STATUS", "ALLOCATION", "HUBS", "UPDATED"}

func groupRow(g *provisioning.EnrollmentGroup) []string {
	return []string{g.EnrollmentGroupID, string(g.Attestation.Type), signer(g), status(g.EnrollmentPolicy),
		string(g.AllocationPolicy), hubs(g.EnrollmentPolicy), when(g.LastUpdatedDateTimeUTC)}
}

// signer names what admits a group's devices: a CA reference or the
// subject of the signing certificate.
func signer(g *provisioning.EnrollmentGroup) string {
	x := g.Attestation.X509
	switch {
	case x == nil:
		return ""
	case x.CAReferences != nil:
		return "ca:" + x.CAReferences.Primary
	case x.SigningCertificates != nil && x.SigningCertificates.Primary != nil && x.SigningCertificates.Primary.Info != nil:
		return x.SigningCertificates.Primary.Info.SubjectName
	}
	return ""
}

var registrationHeader = []string{"REGISTRATION ID", "STATUS", "DEVICE ID", "ASSIGNED HUB", "GROUP", "UPDATED"}

func registrationRow(r *provisioning.RegistrationState) []string {
	return []string{r.RegistrationID, string(r.Status), r.DeviceID, r.AssignedHub, r.EnrollmentGroupID, when(r.LastUpdatedDateTimeUTC)}
}

var caHeader = []string{"NAME", "VERIFIED", "SUBJECT", "SHA-256 THUMBPRINT", "EXPIRY"}

func caRow(c *provisioning.CACertificate) []string {
	return []string{c.Name, fmt.Sprint(c.IsVerified), c.Subject, c.Thumbprint, when(c.Expiry)}
}
