package wire

import (
	"net/url"
	"strings"
)

// DefaultAPIVersion is the api-version the device client sends: the one in
// the DPS MQTT documentation and most SDKs. The broker accepts any.
const DefaultAPIVersion = "2019-03-31"

// Username query parameter names.
const (
	ParamAPIVersion    = "api-version"
	ParamClientVersion = "ClientVersion"
)

// MaxUsernameLen bounds the CONNECT username the broker parses.
const MaxUsernameLen = 1024

// RegistrationsPathSegment separates the ID scope from the registration ID
// in a device username (and a SAS resource): "{idScope}/registrations/{id}".
const RegistrationsPathSegment = "/registrations/"

const registrationsSep = RegistrationsPathSegment

// UsernameError reports a CONNECT username that does not have the DPS
// shape. The broker refuses the connection with "not authorized" /
// "bad user name or password".
type UsernameError struct {
	Msg string
}

func (e *UsernameError) Error() string { return "username: " + e.Msg }

// ParseUsername splits a DPS CONNECT username (PROTOCOL.md §1.2):
// idScope, the literal "/registrations/", registrationId, "/", then a query
// string such as "api-version=2019-03-31&ClientVersion=...".
//
// Any api-version is accepted, and none is required. The query is parsed
// leniently, since ClientVersion is ignored and SDKs encode it differently
// (C not at all): a value that does not percent-decode is kept raw, and
// pairs without '=' get an empty value. idScope and registrationID are
// returned as sent; checking the registration ID's character set is the
// caller's duty (provisioning.ValidateRegistrationID).
func ParseUsername(u string) (idScope, registrationID string, query url.Values, err error) {
	if len(u) > MaxUsernameLen {
		return "", "", nil, &UsernameError{Msg: "too long"}
	}
	i := strings.Index(u, registrationsSep)
	if i < 0 {
		return "", "", nil, &UsernameError{Msg: `expected "{idScope}/registrations/{registrationId}/api-version=..."`}
	}
	idScope = u[:i]
	switch {
	case idScope == "":
		return "", "", nil, &UsernameError{Msg: "empty ID scope"}
	case strings.IndexByte(idScope, '/') >= 0:
		return "", "", nil, &UsernameError{Msg: `ID scope contains "/"`}
	}
	rest := u[i+len(registrationsSep):]
	j := strings.IndexByte(rest, '/')
	if j < 0 {
		return "", "", nil, &UsernameError{Msg: `missing "/" and query after the registration ID`}
	}
	registrationID, rest = rest[:j], rest[j+1:]
	if registrationID == "" {
		return "", "", nil, &UsernameError{Msg: "empty registration ID"}
	}
	return idScope, registrationID, lenientQuery(rest), nil
}

// lenientQuery parses a query string without ever failing.
func lenientQuery(q string) url.Values {
	v := url.Values{}
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" {
			continue
		}
		key, val, _ := strings.Cut(pair, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
		if d, err := url.QueryUnescape(val); err == nil {
			val = d
		}
		v[key] = append(v[key], val)
	}
	return v
}

// FormatUsername builds the CONNECT username a device sends. An empty
// apiVersion means DefaultAPIVersion; an empty clientVersion leaves the
// parameter out, as the embedded C SDK does.
func FormatUsername(idScope, registrationID, apiVersion, clientVersion string) string {
	if apiVersion == "" {
		apiVersion = DefaultAPIVersion
	}
	var b strings.Builder
	b.Grow(len(idScope) + len(registrationsSep) + len(registrationID) + 32 + len(clientVersion))
	b.WriteString(idScope)
	b.WriteString(registrationsSep)
	b.WriteString(registrationID)
	b.WriteString("/" + ParamAPIVersion + "=")
	b.WriteString(url.QueryEscape(apiVersion))
	if clientVersion != "" {
		b.WriteString("&" + ParamClientVersion + "=")
		b.WriteString(url.QueryEscape(clientVersion))
	}
	return b.String()
}
