package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/dpsbroker/dpsbroker/clients/service"
	"github.com/dpsbroker/dpsbroker/provisioning"
)

// lister lists every entry of one kind.
type lister[T any] func(c *service.Client, ctx context.Context) ([]T, error)

// entity is one kind of admin API entry. Its show, list, delete and
// enable/disable commands, and create's "already exists" check, differ
// between kinds only in these fields, so they are written once, here.
type entity[T any] struct {
	noun   string // the command: "enrollment"
	label  string // how messages name one entry: "CA certificate"
	arg    string // the positional argument in usage errors: "ID"
	header []string
	row    func(T) []string

	get func(c *service.Client, ctx context.Context, id string) (T, error)
	put func(c *service.Client, ctx context.Context, v T, ifMatch string) (T, error)
	del func(c *service.Client, ctx context.Context, id, ifMatch string) error
	// list registers the list command's own flags, if any, and returns
	// the call that lists.
	list func(fs *flag.FlagSet) lister[T]

	// policy and ident serve enable/disable; nil for kinds without a
	// provisioning status.
	policy func(T) *provisioning.EnrollmentPolicy
	ident  func(T) (id, etag string)
}

// listAll is entity.list for a list command without flags of its own.
func listAll[T any](l lister[T]) func(*flag.FlagSet) lister[T] {
	return func(*flag.FlagSet) lister[T] { return l }
}

var enrollments = entity[*provisioning.IndividualEnrollment]{
	noun: "enrollment", label: "enrollment", arg: "ID",
	header: enrollmentHeader, row: enrollmentRow,
	get:    (*service.Client).GetEnrollment,
	put:    (*service.Client).PutEnrollment,
	del:    (*service.Client).DeleteEnrollment,
	list:   listAll((*service.Client).ListEnrollments),
	policy: func(x *provisioning.IndividualEnrollment) *provisioning.EnrollmentPolicy { return &x.EnrollmentPolicy },
	ident:  func(x *provisioning.IndividualEnrollment) (string, string) { return x.RegistrationID, x.ETag },
}

var groups = entity[*provisioning.EnrollmentGroup]{
	noun: "group", label: "group", arg: "G",
	header: groupHeader, row: groupRow,
	get:    (*service.Client).GetEnrollmentGroup,
	put:    (*service.Client).PutEnrollmentGroup,
	del:    (*service.Client).DeleteEnrollmentGroup,
	list:   listAll((*service.Client).ListEnrollmentGroups),
	policy: func(g *provisioning.EnrollmentGroup) *provisioning.EnrollmentPolicy { return &g.EnrollmentPolicy },
	ident:  func(g *provisioning.EnrollmentGroup) (string, string) { return g.EnrollmentGroupID, g.ETag },
}

var registrations = entity[*provisioning.RegistrationState]{
	noun: "registration", label: "registration", arg: "ID",
	header: registrationHeader, row: registrationRow,
	get: (*service.Client).GetRegistration,
	del: (*service.Client).DeleteRegistration,
	list: func(fs *flag.FlagSet) lister[*provisioning.RegistrationState] {
		group := fs.String("group", "", "only the records admitted by this enrollment group")
		return func(c *service.Client, ctx context.Context) ([]*provisioning.RegistrationState, error) {
			return c.ListRegistrations(ctx, *group)
		}
	},
}

var caCertificates = entity[*provisioning.CACertificate]{
	noun: "ca", label: "CA certificate", arg: "NAME",
	header: caHeader, row: caRow,
	get:  (*service.Client).GetCACertificate,
	put:  (*service.Client).PutCACertificate,
	del:  (*service.Client).DeleteCACertificate,
	list: listAll((*service.Client).ListCACertificates),
}

// create stores v under id, refusing to overwrite an existing entry unless
// replace is set, and prints what the server stored.
func (x entity[T]) create(ctx context.Context, e *env, id string, v T, replace bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	if !replace {
		if err := mustNotExist(x.get(c, ctx, id)); err != nil {
			return fmt.Errorf("%s %q %w", x.label, id, err)
		}
	}
	out, err := x.put(c, ctx, v, "")
	if err != nil {
		return err
	}
	return printJSON(e.stdout, out)
}

func (x entity[T]) show(ctx context.Context, e *env, args []string) error {
	pos, err := parse(newFlags(e, x.noun+" show"), args, 1, x.arg)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	v, err := x.get(c, ctx, pos[0])
	if err != nil {
		return err
	}
	return show(e, v, x.header, x.row(v))
}

func (x entity[T]) listCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, x.noun+" list")
	fetch := x.list(fs)
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	// Check -o before the request, so that a typo costs no round trip.
	if _, err := outputFormat(e, "table"); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	all, err := fetch(c, ctx)
	if err != nil {
		return err
	}
	return list(e, all, x.header, x.row)
}

// setStatus is a read-modify-write guarded by If-Match, so that a
// concurrent change is never overwritten.
func (x entity[T]) setStatus(s provisioning.ProvisioningStatus) func(context.Context, *env, []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		pos, err := parse(newFlags(e, x.noun+" "+verb(s)), args, 1, x.arg)
		if err != nil {
			return err
		}
		c, err := e.client()
		if err != nil {
			return err
		}
		v, err := x.get(c, ctx, pos[0])
		if err != nil {
			return err
		}
		x.policy(v).ProvisioningStatus = s
		id, etag := x.ident(v)
		if _, err := x.put(c, ctx, v, etag); err != nil {
			return changedConcurrently(err)
		}
		fmt.Fprintf(e.stdout, "%s %s %s\n", x.label, id, s)
		return nil
	}
}

func (x entity[T]) delete(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, x.noun+" delete")
	etag := fs.String("etag", "", "delete only if the entry still has this etag")
	pos, err := parse(fs, args, 1, x.arg)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if err := x.del(c, ctx, pos[0], *etag); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s %s deleted\n", x.label, pos[0])
	return nil
}

// errExists says why create refused; create prefixes the entry.
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
