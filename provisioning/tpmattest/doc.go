// Package tpmattest is the server side of TPM attestation over MQTT
// (DESIGN.md §5, PROTOCOL.md §4): it checks the endorsement key (EK) and
// storage root key (SRK) a device sends, builds the authenticationKey blob
// that only the TPM holding both keys can import, keeps the state of a
// pending challenge for the ChallengeStore, and verifies the SAS token the
// device signs with the imported HMAC key.
//
// It is pure Go: no TPM is needed on the server. The blob follows
// notes/tpm-blob.md byte by byte (verified by importing it on swtpm and on
// the go-tpm-tools simulator, see clients/tpm's tests):
//
//	1 TPM2B_ID_OBJECT         MakeCredential(EK, W, Name(SRK))
//	2 TPM2B_ENCRYPTED_SECRET  its seed, to the EK
//	3 TPM2B_PRIVATE           the HMAC key K, inner wrapper W, outer wrapper for the SRK
//	4 TPM2B_ENCRYPTED_SECRET  the outer seed, to the SRK
//	5 TPM2B_PUBLIC            the HMAC key's public area
//	6 TPM2B_DATA              encUriData, always empty
//
// A typical first leg (register request with tpm.endorsementKey and
// tpm.storageRootKey, no SAS):
//
//	ek, err := tpmattest.ParseEKBase64(req.TPM.EndorsementKey)
//	// find the enrollment; refuse unless ek.Matches(enrollment's EK)
//	srk, err := tpmattest.ParseSRKBase64(req.TPM.StorageRootKey)
//	ch, err := tpmattest.NewKeyChallenge(nil, ek, srk)
//	p := ch.Pending(regID, now, tpmattest.DefaultChallengeTTL)
//	err = store.PutChallenge(ctx, tpmattest.ChallengeKey(regID, ek.Digest), p.Marshal(), tpmattest.DefaultChallengeTTL)
//	// answer 401 {"authenticationKey": ch.AuthenticationKey, "keyName": "registration"}
//
// and the second leg (same body plus the SAS):
//
//	b, err := store.TakeChallenge(ctx, tpmattest.ChallengeKey(regID, ek.Digest))
//	p, err := tpmattest.UnmarshalPendingChallenge(b)
//	err = p.Check(regID, ek, srk, now)
//	err = p.VerifySAS(token, idScope, now)
//
// Every failure is an *Error whose Code is the DPS error code to answer
// with. Nothing here logs or prints key material: Challenge and
// PendingChallenge redact their keys in String and LogValue.
package tpmattest
