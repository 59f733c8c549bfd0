package dmpool

import (
	"fmt"
	"strconv"
	"strings"
)

// Status is the parsed thin-pool status line.
type Status struct {
	TransactionID   uint64
	UsedMetaBlocks  uint64
	TotalMetaBlocks uint64
	UsedDataBlocks  uint64
	TotalDataBlocks uint64
	// DataBlockSize is in bytes (from the pool table; the status line
	// does not carry it).
	DataBlockSize  uint64
	ReadOnly       bool
	OutOfDataSpace bool
	NeedsCheck     bool
	ErrorIfNoSpace bool
	// Fail is set when the kernel reports the pool as failed; all other
	// fields are then zero.
	Fail bool
	// HeldMetadataRoot is "-" unless a metadata snapshot is reserved.
	HeldMetadataRoot string
	// EventNr is the pool device's device-mapper event counter at the
	// time of the status. dm-thin raises an event on every change of the
	// pool's mode (to out-of-data-space, read-only or fail and back) and
	// when a low-water mark is crossed; the counter only grows while the
	// device exists. It is not part of the status line: the reply header
	// carries it.
	EventNr uint32
}

// Trouble names what the status says may have lost writes: "failed",
// "read-only", "needs_check", "out of data space", or "" for a healthy
// pool. A pool that is full but still in write mode is not trouble yet:
// no write has been refused.
func (s Status) Trouble() string {
	switch {
	case s.Fail:
		return "failed"
	case s.ReadOnly:
		return "read-only"
	case s.NeedsCheck:
		return "needs_check"
	case s.OutOfDataSpace:
		return "out of data space"
	}
	return ""
}

// MetadataBlockSize is dm-thin's metadata block size in bytes, fixed by
// the kernel; the status line counts metadata in these blocks.
const MetadataBlockSize = 4096

// UsedMetaBytes and TotalMetaBytes are the metadata figures in bytes.
func (s Status) UsedMetaBytes() uint64  { return s.UsedMetaBlocks * MetadataBlockSize }
func (s Status) TotalMetaBytes() uint64 { return s.TotalMetaBlocks * MetadataBlockSize }

// Full reports whether no data block is left.
func (s Status) Full() bool {
	return s.OutOfDataSpace || (s.TotalDataBlocks > 0 && s.UsedDataBlocks >= s.TotalDataBlocks) ||
		(s.TotalMetaBlocks > 0 && s.UsedMetaBlocks >= s.TotalMetaBlocks)
}

// parsePoolStatus parses
// "<tid> <um>/<tm> <ud>/<td> <held root> ro|rw|out_of_data_space
// [no_]discard_passdown [error|queue]_if_no_space needs_check|- <low wm>"
// Fields after the mode are optional on old kernels.
func parsePoolStatus(line string) (Status, error) {
	f := strings.Fields(line)
	if len(f) >= 1 && f[0] == "Fail" {
		return Status{Fail: true}, nil
	}
	if len(f) < 5 {
		return Status{}, fmt.Errorf("unexpected thin-pool status %q", line)
	}
	var s Status
	var err error
	if s.TransactionID, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return Status{}, fmt.Errorf("thin-pool status %q: transaction id: %w", line, err)
	}
	if s.UsedMetaBlocks, s.TotalMetaBlocks, err = parseRatio(f[1]); err != nil {
		return Status{}, fmt.Errorf("thin-pool status %q: metadata: %w", line, err)
	}
	if s.UsedDataBlocks, s.TotalDataBlocks, err = parseRatio(f[2]); err != nil {
		return Status{}, fmt.Errorf("thin-pool status %q: data: %w", line, err)
	}
	s.HeldMetadataRoot = f[3]
	switch f[4] {
	case "rw":
	case "ro":
		s.ReadOnly = true
	case "out_of_data_space":
		s.OutOfDataSpace = true
	default:
		return Status{}, fmt.Errorf("thin-pool status %q: unknown mode %q", line, f[4])
	}
	for _, w := range f[5:] {
		switch w {
		case "needs_check":
			s.NeedsCheck = true
		case "error_if_no_space":
			s.ErrorIfNoSpace = true
		}
	}
	return s, nil
}

func parseRatio(s string) (uint64, uint64, error) {
	a, b, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not used/total", s)
	}
	u, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, 0, err
	}
	t, err := strconv.ParseUint(b, 10, 64)
	if err != nil {
		return 0, 0, err
	}
	return u, t, nil
}

// ThinStatus is the usage of one active thin device.
type ThinStatus struct {
	MappedSectors uint64
	MappedBytes   uint64
	// HighestMappedSector is -1 when nothing is mapped.
	HighestMappedSector int64
	Fail                bool
}

// parseThinStatus parses "<mapped sectors> <highest mapped sector>",
// where highest may be "-", or the whole line "-" / "Fail".
func parseThinStatus(line string) (ThinStatus, error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] == "-" {
		return ThinStatus{HighestMappedSector: -1}, nil
	}
	if f[0] == "Fail" {
		return ThinStatus{Fail: true, HighestMappedSector: -1}, nil
	}
	mapped, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return ThinStatus{}, fmt.Errorf("thin status %q: %w", line, err)
	}
	ts := ThinStatus{MappedSectors: mapped, MappedBytes: mapped * 512, HighestMappedSector: -1}
	if len(f) > 1 && f[1] != "-" {
		h, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return ThinStatus{}, fmt.Errorf("thin status %q: %w", line, err)
		}
		ts.HighestMappedSector = h
	}
	return ts, nil
}

// poolTable is the parsed thin-pool table line.
type poolTable struct {
	MetadataDev, DataDev string // "major:minor" (kernel form) or a path
	BlockSectors         uint32
	LowWaterMark         uint64
	Features             []string
}

func (t poolTable) String() string {
	s := fmt.Sprintf("%s %s %d %d %d", t.MetadataDev, t.DataDev, t.BlockSectors, t.LowWaterMark, len(t.Features))
	for _, f := range t.Features {
		s += " " + f
	}
	return s
}

func parsePoolTable(params string) (poolTable, error) {
	f := strings.Fields(params)
	if len(f) < 5 {
		return poolTable{}, fmt.Errorf("unexpected thin-pool table %q", params)
	}
	bs, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		return poolTable{}, fmt.Errorf("thin-pool table %q: block size: %w", params, err)
	}
	lw, err := strconv.ParseUint(f[3], 10, 64)
	if err != nil {
		return poolTable{}, fmt.Errorf("thin-pool table %q: low water mark: %w", params, err)
	}
	n, err := strconv.Atoi(f[4])
	if err != nil || n != len(f)-5 {
		return poolTable{}, fmt.Errorf("thin-pool table %q: bad feature count", params)
	}
	return poolTable{MetadataDev: f[0], DataDev: f[1], BlockSectors: uint32(bs), LowWaterMark: lw, Features: f[5:]}, nil
}

// thinTable is the parsed thin table line "<pool dev> <id> [<external
// origin dev>]". The kernel prints the origin as "major:minor" whatever
// form the table was loaded with, so Origin is kept in that form.
type thinTable struct {
	PoolDev string
	ID      uint32
	// Origin is the external origin's "major:minor", "" for none.
	Origin string
}

func (t thinTable) String() string {
	if t.Origin == "" {
		return fmt.Sprintf("%s %d", t.PoolDev, t.ID)
	}
	return fmt.Sprintf("%s %d %s", t.PoolDev, t.ID, t.Origin)
}

func parseThinTable(params string) (thinTable, error) {
	f := strings.Fields(params)
	if len(f) < 2 {
		return thinTable{}, fmt.Errorf("unexpected thin table %q", params)
	}
	id, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return thinTable{}, fmt.Errorf("thin table %q: id: %w", params, err)
	}
	t := thinTable{PoolDev: f[0], ID: uint32(id)}
	if len(f) > 2 {
		t.Origin = f[2]
	}
	return t, nil
}

func tableString(ts []Target) string {
	var b strings.Builder
	for i, t := range ts {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
	}
	return b.String()
}

func devString(major, minor uint32) string { return fmt.Sprintf("%d:%d", major, minor) }
