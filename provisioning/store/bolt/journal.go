package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The registration journal.
//
// A registration commit is what a device waits for before it gets its
// answer, so it must be durable before the broker replies. Committed
// straight into bbolt, one costs a B+tree update of five buckets (15-18
// pages written) and bbolt's two fdatasyncs: ~0.35 ms of CPU and ~0.6 ms
// of waiting when nothing shares its transaction (few devices in flight),
// more than everything else the broker adds to a TLS handshake.
//
// So registration commits go to an append-only journal first: the records
// of all commits queued together are written in one write(2) and made
// durable with one fdatasync, and the devices are answered. They are kept
// in memory (the overlay, which GetRegistration and GetOperation read
// first) and applied to bbolt later in one ordinary, fsynced transaction
// for many of them: when enough are pending, after at most a second, and
// before any other write or any listing, so bbolt alone serves everything
// else and never sees writes out of order.
//
// The journal file is preallocated and filled with zeros once, and every
// cycle writes it again from the start: overwriting written blocks changes
// no file metadata, so the fdatasync flushes data only. A record is
//
//	length uint32 | crc32c(seq|payload) uint32 | seq uint64 | payload
//
// where seq is the registration's etag sequence, store-wide and only
// growing. The apply transaction also stores the highest seq it applied
// (meta key journalAppliedKey), so recovery replays exactly the records
// above it, in order, stopping at the first record that is torn or does
// not continue the sequence (the rest of an older cycle). Because the
// marker commits with the data it describes, the journal needs no fsync
// of its own when a cycle ends.

const (
	// journalSize is the preallocated size; a cycle applies before its
	// records would pass it.
	journalSize = 8 << 20
	// journalHeader is length, crc and seq.
	journalHeader = 16
	// maxJournalRecord bounds one record; larger commits go straight to
	// bbolt (registration payloads are bounded far below it by the MQTT
	// packet size).
	maxJournalRecord = journalSize / 8
)

var (
	journalAppliedKey = []byte("journal-applied")
	castagnoli        = crc32.MakeTable(crc32.Castagnoli)
	// errJournalFull says the records do not fit in the rest of the file.
	errJournalFull = errors.New("journal full")
)

// journalEntry is one registration commit: everything the apply
// transaction writes, already encoded.
type journalEntry struct {
	seq      uint64 // etag sequence of the record
	key      []byte // registration key
	record   []byte // the stamped provisioning.RegistrationState
	oldGroup string // enrollment group of the record it replaces ("" none)
	newGroup string // enrollment group of record ("" none)
	opID     []byte
	op       []byte // the encoded provisioning.Operation
	expires  int64  // the operation's expiry, Unix nanoseconds
	eventSeq uint64
	event    []byte // the encoded provisioning.Event

	// Not in the file: the creation time a later commit of the same
	// registration keeps, so that it does not decode record (its etag is
	// etagFor(seq)).
	created int64 // Unix nanoseconds
}

// encodedSize is the length of e's record in the file.
func (e *journalEntry) encodedSize() int {
	n := journalHeader + 8 + 8
	for _, b := range [][]byte{e.key, e.record, []byte(e.oldGroup), []byte(e.newGroup), e.opID, e.op, e.event} {
		n += binary.MaxVarintLen64 + len(b)
	}
	return n
}

// appendRecord appends e's record to buf.
func (e *journalEntry) appendRecord(buf []byte) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, journalHeader)...)
	for _, b := range [][]byte{e.key, e.record, []byte(e.oldGroup), []byte(e.newGroup), e.opID, e.op, e.event} {
		buf = binary.AppendUvarint(buf, uint64(len(b)))
		buf = append(buf, b...)
	}
	buf = binary.BigEndian.AppendUint64(buf, uint64(e.expires))
	buf = binary.BigEndian.AppendUint64(buf, e.eventSeq)
	rec := buf[start:]
	binary.BigEndian.PutUint32(rec[0:4], uint32(len(rec)-journalHeader))
	binary.BigEndian.PutUint64(rec[8:16], e.seq)
	binary.BigEndian.PutUint32(rec[4:8], crc32.Checksum(rec[8:], castagnoli))
	return buf
}

// decodePayload fills e from a record's payload.
func (e *journalEntry) decodePayload(p []byte) error {
	var fields [7][]byte
	for i := range fields {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			return fmt.Errorf("field %d: bad length", i)
		}
		fields[i], p = p[k:k+int(n)], p[k+int(n):]
	}
	if len(p) != 16 {
		return fmt.Errorf("%d trailing bytes, want 16", len(p))
	}
	e.key, e.record, e.oldGroup, e.newGroup = fields[0], fields[1], string(fields[2]), string(fields[3])
	e.opID, e.op, e.event = fields[4], fields[5], fields[6]
	e.expires = int64(binary.BigEndian.Uint64(p[:8]))
	e.eventSeq = binary.BigEndian.Uint64(p[8:])
	if len(e.key) == 0 || len(e.record) == 0 || len(e.opID) == 0 || len(e.op) == 0 || len(e.event) == 0 {
		return errors.New("empty key, record, operation or event")
	}
	return nil
}

// journal is the file. Only the store's writer goroutine uses it.
type journal struct {
	f     *os.File
	off   int64 // where the next record goes
	buf   []byte
	stats *journalCounters
}

// openJournal opens or creates the journal at path, returns it with the
// records it holds above applied (in order), and leaves it preallocated.
// Appends and their fdatasync time are counted in stats.
func openJournal(path string, applied uint64, stats *journalCounters) (*journal, []*journalEntry, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("journal: %w", err)
	}
	j := &journal{f: f, stats: stats}
	data, err := io.ReadAll(io.LimitReader(f, journalSize))
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	entries, err := readJournal(data, applied)
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	if len(data) < journalSize {
		if err := j.preallocate(int64(len(data))); err != nil {
			_ = f.Close()
			return nil, nil, fmt.Errorf("journal %s: %w", path, err)
		}
	}
	return j, entries, nil
}

// readJournal parses the records of data in order and returns those above
// applied. It stops at the first record that is torn (bad length or
// checksum) or whose seq does not grow: the end of what the last cycle
// wrote. A record that checks out but cannot be decoded is an error: it
// may be an acknowledged registration, so it is never dropped silently.
func readJournal(data []byte, applied uint64) ([]*journalEntry, error) {
	var out []*journalEntry
	var last uint64
	for off := 0; len(data)-off >= journalHeader; {
		h := data[off:]
		n := int(binary.BigEndian.Uint32(h[0:4]))
		if n == 0 || n > len(h)-journalHeader {
			break
		}
		if crc32.Checksum(h[8:journalHeader+n], castagnoli) != binary.BigEndian.Uint32(h[4:8]) {
			break
		}
		seq := binary.BigEndian.Uint64(h[8:16])
		if seq <= last {
			break
		}
		last = seq
		off += journalHeader + n
		if seq <= applied {
			continue
		}
		e := &journalEntry{seq: seq}
		if err := e.decodePayload(h[journalHeader : journalHeader+n]); err != nil {
			return nil, fmt.Errorf("record %d: %w", seq, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// preallocate fills the file with zeros from its current end to
// journalSize and syncs it and its directory, so that later overwrites
// change data blocks only.
func (j *journal) preallocate(from int64) error {
	zeros := make([]byte, 1<<20)
	for off := from; off < journalSize; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), journalSize-off)
		if _, err := j.f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
	}
	if err := j.f.Sync(); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(j.f.Name()))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// append writes the records of entries after the previous ones and makes
// them durable. errJournalFull means nothing was written.
func (j *journal) append(entries []*journalEntry) error {
	j.buf = j.buf[:0]
	for _, e := range entries {
		j.buf = e.appendRecord(j.buf)
	}
	if j.off+int64(len(j.buf)) > journalSize {
		return errJournalFull
	}
	if _, err := j.f.WriteAt(j.buf, j.off); err != nil {
		j.stats.appendFailures.Add(1)
		return fmt.Errorf("journal write: %w", err)
	}
	start := time.Now()
	err := fdatasync(j.f)
	j.stats.syncNanos.Add(int64(time.Since(start)))
	if err != nil {
		j.stats.appendFailures.Add(1)
		return fmt.Errorf("journal sync: %w", err)
	}
	j.stats.appends.Add(1)
	j.stats.entries.Add(uint64(len(entries)))
	j.off += int64(len(j.buf))
	if cap(j.buf) > 1<<20 {
		j.buf = nil // one large batch should not pin its buffer
	}
	return nil
}

// reset starts the next cycle at the beginning of the file: everything in
// it has been applied (and the apply marker committed).
func (j *journal) reset() { j.off = 0 }

func (j *journal) close() error { return j.f.Close() }
