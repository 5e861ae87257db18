package tpm

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/provisioning/sas"
)

// maxHMACBuffer is TPM2B_MAX_BUFFER's usual limit; longer data goes
// through an HMAC sequence.
const maxHMACBuffer = 1024

// HMAC computes HMAC(K, data) in the TPM with the imported key.
func (d *Device) HMAC(ctx context.Context, data []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.id == nil {
		return nil, ErrNoKey
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, release, err := d.loadHMACKey()
	if err != nil {
		return nil, err
	}
	defer release()
	key := tpm2.AuthHandle{Handle: h, Name: d.id.name, Auth: tpm2.PasswordAuth(nil)}
	if len(data) <= maxHMACBuffer {
		rsp, err := tpm2.Hmac{Handle: key, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: d.id.hash}.Execute(d.tpm)
		if err != nil {
			return nil, fmt.Errorf("tpm: hmac: %w", err)
		}
		return rsp.OutHMAC.Buffer, nil
	}
	return d.hmacSequence(key, data)
}

func (d *Device) hmacSequence(key tpm2.AuthHandle, data []byte) ([]byte, error) {
	start, err := tpm2.HmacStart{Handle: key, HashAlg: d.id.hash}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: hmac start: %w", err)
	}
	seq := tpm2.AuthHandle{Handle: start.SequenceHandle, Auth: tpm2.PasswordAuth(nil)}
	// A completed sequence is gone; a failed one stays and must be flushed.
	abandon := func() { o := object{handle: start.SequenceHandle, transient: true}; d.flush(&o) }
	for len(data) > maxHMACBuffer {
		if _, err := (tpm2.SequenceUpdate{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data[:maxHMACBuffer]}}).Execute(d.tpm); err != nil {
			abandon()
			return nil, fmt.Errorf("tpm: hmac update: %w", err)
		}
		data = data[maxHMACBuffer:]
	}
	rsp, err := tpm2.SequenceComplete{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, Hierarchy: tpm2.TPMRHNull}.Execute(d.tpm)
	if err != nil {
		abandon()
		return nil, fmt.Errorf("tpm: hmac complete: %w", err)
	}
	return rsp.Result.Buffer, nil
}

// SignSAS builds the SAS token a TPM device answers the challenge with
// (and later signs IoT Hub tokens with): resource is
// "{idScope}/registrations/{registrationId}" (sas.Resource), sent
// URL-encoded as the Node TPM SDK does, signed in the TPM over
// sr + "\n" + se, with skn=registration.
func (d *Device) SignSAS(ctx context.Context, resource string, expiry time.Time) (string, error) {
	sr := escape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac, err := d.HMAC(ctx, []byte(sr+"\n"+se))
	if err != nil {
		return "", err
	}
	return sas.Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(mac)) +
		"&se=" + se + "&skn=" + sas.DefaultKeyName, nil
}

// escape percent-encodes like encodeURIComponent for the characters
// registration IDs may hold (and like package sas, so that the same key
// gives the same token).
func escape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
