package dmpool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestHeaderLayout(t *testing.T) {
	if unsafe.Sizeof(unix.DmIoctl{}) != headerSize || unsafe.Sizeof(unix.DmTargetSpec{}) != specSize {
		t.Fatalf("struct sizes changed: dm_ioctl %d dm_target_spec %d", unsafe.Sizeof(unix.DmIoctl{}), unsafe.Sizeof(unix.DmTargetSpec{}))
	}
	buf := marshalHeader(4096, "flyio-pool", unix.DM_SUSPEND_FLAG, 0x1234, 1, []byte("payload"))
	h := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	if h.Version[0] != unix.DM_VERSION_MAJOR || h.Data_size != 4096 || h.Data_start != headerSize ||
		h.Flags != unix.DM_SUSPEND_FLAG || h.Dev != 0x1234 || h.Target_count != 1 {
		t.Fatalf("bad header %+v", h)
	}
	if cString(h.Name[:]) != "flyio-pool" {
		t.Fatalf("name %q", cString(h.Name[:]))
	}
	if string(buf[headerSize:headerSize+7]) != "payload" {
		t.Fatal("payload not after header")
	}
	// The result decoder must return data_start..data_size.
	h.Data_size = headerSize + 7
	res, full := unmarshalResult(buf)
	if full || string(res.data) != "payload" {
		t.Fatalf("unmarshalResult = %q full=%v", res.data, full)
	}
}

func TestMarshalTargets(t *testing.T) {
	ts := []Target{
		{Start: 0, Length: 2048, Type: "thin", Params: "253:0 7"},
		{Start: 2048, Length: 100, Type: "thin-pool", Params: "7:0 7:1 256 0 1 skip_block_zeroing"},
	}
	b := marshalTargets(ts)
	if len(b)%8 != 0 {
		t.Fatalf("payload length %d not 8-aligned", len(b))
	}
	// Input: next is relative to the spec. Convert to the output form
	// (relative to the data start) for the decoder.
	next := binary.NativeEndian.Uint32(b[20:])
	if int(next) != align8(specSize+len("253:0 7")+1) {
		t.Fatalf("next = %d", next)
	}
	got, err := unmarshalTargets(b, 2)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(ts) {
		t.Fatalf("round trip: %v != %v", got, ts)
	}
	if _, err := unmarshalTargets(b[:10], 1); err == nil {
		t.Fatal("truncated table accepted")
	}
}

func TestUnmarshalNameList(t *testing.T) {
	rec := func(dev uint64, next uint32, name string) []byte {
		b := make([]byte, align8(12+len(name)+1+8))
		binary.NativeEndian.PutUint64(b, dev)
		binary.NativeEndian.PutUint32(b[8:], next)
		copy(b[12:], name)
		return b
	}
	r1 := rec(unix.Mkdev(253, 0), 0, "flyio-pool")
	binary.NativeEndian.PutUint32(r1[8:], uint32(len(r1)))
	data := append(r1, rec(unix.Mkdev(253, 1), 0, "thin-a")...)
	got, err := unmarshalNameList(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "flyio-pool" || got[1].Name != "thin-a" || unix.Minor(got[1].Dev) != 1 {
		t.Fatalf("got %+v", got)
	}
	empty, err := unmarshalNameList(make([]byte, 16))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty list: %v %v", empty, err)
	}
}

func TestParsePoolStatus(t *testing.T) {
	s, err := parsePoolStatus("3 120/4096 500/1024 - rw no_discard_passdown error_if_no_space - 1024")
	if err != nil {
		t.Fatal(err)
	}
	want := Status{TransactionID: 3, UsedMetaBlocks: 120, TotalMetaBlocks: 4096, UsedDataBlocks: 500, TotalDataBlocks: 1024,
		ErrorIfNoSpace: true, HeldMetadataRoot: "-"}
	if s != want {
		t.Fatalf("got %+v", s)
	}
	if s.Full() {
		t.Fatal("not full")
	}
	s, _ = parsePoolStatus("0 10/4096 1024/1024 - out_of_data_space discard_passdown queue_if_no_space - 1024")
	if !s.OutOfDataSpace || !s.Full() {
		t.Fatalf("out of space not detected: %+v", s)
	}
	s, _ = parsePoolStatus("0 10/4096 1024/1024 - rw discard_passdown queue_if_no_space - 1024")
	if !s.Full() {
		t.Fatal("used==total must be full")
	}
	s, _ = parsePoolStatus("7 10/4096 1/1024 55 ro discard_passdown queue_if_no_space needs_check 1024")
	if !s.ReadOnly || !s.NeedsCheck || s.HeldMetadataRoot != "55" {
		t.Fatalf("got %+v", s)
	}
	s, err = parsePoolStatus("Fail")
	if err != nil || !s.Fail {
		t.Fatalf("Fail: %+v %v", s, err)
	}
	for _, bad := range []string{"", "1 2 3", "x 1/2 1/2 - rw", "1 1/2 1-2 - rw", "1 1/2 1/2 - weird"} {
		if _, err := parsePoolStatus(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseThinStatus(t *testing.T) {
	cases := map[string]ThinStatus{
		"2048 4095": {MappedSectors: 2048, MappedBytes: 2048 * 512, HighestMappedSector: 4095},
		"0 -":       {HighestMappedSector: -1},
		"-":         {HighestMappedSector: -1},
		"Fail":      {Fail: true, HighestMappedSector: -1},
	}
	for in, want := range cases {
		got, err := parseThinStatus(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v", in, got, err)
		}
	}
	if _, err := parseThinStatus("x y"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestTables(t *testing.T) {
	pt := poolTable{MetadataDev: "7:0", DataDev: "7:1", BlockSectors: 256, LowWaterMark: 0, Features: []string{"skip_block_zeroing", "error_if_no_space"}}
	s := pt.String()
	if s != "7:0 7:1 256 0 2 skip_block_zeroing error_if_no_space" {
		t.Fatalf("pool table %q", s)
	}
	back, err := parsePoolTable(s)
	if err != nil || back.String() != s {
		t.Fatalf("round trip %q: %v", back.String(), err)
	}
	if _, err := parsePoolTable("7:0 7:1 256 0 3 skip_block_zeroing"); err == nil {
		t.Fatal("bad feature count accepted")
	}
	tt, err := parseThinTable("253:0 42")
	if err != nil || tt != (thinTable{PoolDev: "253:0", ID: 42}) || tt.String() != "253:0 42" {
		t.Fatalf("thin table %+v %v", tt, err)
	}
	if !sameThin(Target{Length: 8, Type: "thin", Params: "253:0 42"}, Target{Length: 8, Type: "thin", Params: "253:0  42"}) {
		t.Fatal("same thin not recognised")
	}
	if sameThin(Target{Length: 8, Type: "thin", Params: "253:0 42"}, Target{Length: 16, Type: "thin", Params: "253:0 42"}) {
		t.Fatal("size difference ignored")
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		errno unix.Errno
		want  error
		kind  func(error) bool
	}{
		{unix.EEXIST, ErrDeviceExists, errdefs.IsAlreadyExists},
		{unix.ENOSPC, ErrPoolFull, errdefs.IsResourceExhausted},
		{unix.ENODATA, ErrNotFound, errdefs.IsNotFound},
		{unix.EBUSY, ErrDeviceBusy, errdefs.IsFailedPrecondition},
		{unix.ENXIO, ErrPoolMissing, errdefs.IsNotFound},
		{unix.EOPNOTSUPP, ErrPoolReadOnly, errdefs.IsFailedPrecondition},
	}
	for _, c := range cases {
		err := mapMessageErr("flyio-pool", "create thin 9", fmt.Errorf("message: %w", c.errno))
		if !errors.Is(err, c.want) || !c.kind(err) || !errors.Is(err, c.errno) {
			t.Errorf("%v: got %v", c.errno, err)
		}
		if !strings.Contains(err.Error(), `pool "flyio-pool"`) || !strings.Contains(err.Error(), "create thin 9") {
			t.Errorf("error does not name pool and operation: %v", err)
		}
	}
	if !strings.Contains(ErrPoolFull.Error(), "devicemapper pool is full, cannot create device") {
		t.Fatal("ErrPoolFull must carry the seed's message")
	}
	if mapMessageErr("p", "x", nil) != nil {
		t.Fatal("nil error mapped")
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Name: "p", DataFile: "d", MetadataFile: "m"}.withDefaults()
	if err != nil || c.BlockSize != 128<<10 {
		t.Fatalf("%+v %v", c, err)
	}
	// Zeroing is the zero value: a Config that forgets it still zeroes.
	if got := strings.Join(c.features(), " "); got != "error_if_no_space" {
		t.Fatalf("features %q", got)
	}
	c.SkipBlockZeroing = true
	if got := strings.Join(c.features(), " "); got != "skip_block_zeroing error_if_no_space" {
		t.Fatalf("features with SkipBlockZeroing %q", got)
	}
	bad := []Config{
		{Name: "", DataFile: "d", MetadataFile: "m"},
		{Name: "a/b", DataFile: "d", MetadataFile: "m"},
		{Name: "p", DataFile: "d", MetadataFile: "m", BlockSize: 96 << 10},
		{Name: "p", DataDevice: "/dev/x"},
		{Name: "p", DataFile: "d"},
	}
	for _, b := range bad {
		if _, err := b.withDefaults(); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%+v: got %v", b, err)
		}
	}
}

// TestPrepareStorage checks the zeroing decision without device-mapper:
// a new file is created (and is fresh), existing metadata is never
// zeroed, and a non-zero file without thin magic is refused.
func TestPrepareStorage(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Name: "unit", DataFile: filepath.Join(dir, "data"), MetadataFile: filepath.Join(dir, "meta"),
		DataSize: 1 << 20, MetadataSize: 1 << 20}
	cfg, _ = cfg.withDefaults()
	p := &Pool{cfg: cfg}
	fresh, err := p.prepareStorage()
	if err != nil || !fresh {
		t.Fatalf("new files: fresh=%v err=%v", fresh, err)
	}
	if st, _ := os.Stat(cfg.DataFile); st.Size() != 1<<20 {
		t.Fatalf("data file size %d", st.Size())
	}
	// Existing but still all zero: the kernel will format it.
	if fresh, err := p.prepareStorage(); err != nil || !fresh {
		t.Fatalf("zero file: fresh=%v err=%v", fresh, err)
	}
	// Valid superblock magic: must be kept.
	hdr := make([]byte, 4096)
	hdr[100] = 0xAB
	binary.LittleEndian.PutUint64(hdr[32:], thinSuperblockMagic)
	if err := os.WriteFile(cfg.MetadataFile, hdr, 0o600); err != nil {
		t.Fatal(err)
	}
	if fresh, err := p.prepareStorage(); err != nil || fresh {
		t.Fatalf("existing metadata: fresh=%v err=%v", fresh, err)
	}
	if b, _ := os.ReadFile(cfg.MetadataFile); b[100] != 0xAB {
		t.Fatal("existing metadata was modified")
	}
	// Garbage: refused, not zeroed.
	hdr[32] = 0
	os.WriteFile(cfg.MetadataFile, hdr, 0o600)
	if _, err := p.prepareStorage(); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), cfg.MetadataFile) {
		t.Fatalf("garbage metadata: %v", err)
	}
	if b, _ := os.ReadFile(cfg.MetadataFile); b[100] != 0xAB {
		t.Fatal("garbage metadata was zeroed")
	}
}

// TestPrepareStorageRefusesHalfAPool checks that a loopback pool with one
// of its two files missing (a disk not mounted, a file moved) is refused,
// naming the missing file, and that nothing is created or changed; only
// when both are absent is a new pool made, directories included.
func TestPrepareStorageRefusesHalfAPool(t *testing.T) {
	for _, missing := range []string{"data", "meta"} {
		t.Run("missing-"+missing, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{Name: "unit", DataFile: filepath.Join(dir, "data"), MetadataFile: filepath.Join(dir, "meta"),
				DataSize: 1 << 20, MetadataSize: 1 << 20}
			cfg, _ = cfg.withDefaults()
			p := &Pool{cfg: cfg}
			hdr := make([]byte, 4096)
			binary.LittleEndian.PutUint64(hdr[32:], thinSuperblockMagic)
			present, gone := cfg.MetadataFile, cfg.DataFile
			if missing == "meta" {
				present, gone = cfg.DataFile, cfg.MetadataFile
			}
			if err := os.WriteFile(present, hdr, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := p.prepareStorage()
			if !errors.Is(err, ErrMismatch) || !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), gone) {
				t.Fatalf("prepareStorage with %s missing: %v; want ErrMismatch naming %s", missing, err, gone)
			}
			if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s was created: %v", gone, err)
			}
			if b, _ := os.ReadFile(present); len(b) != 4096 || binary.LittleEndian.Uint64(b[32:]) != thinSuperblockMagic {
				t.Fatalf("%s was changed", present)
			}
		})
	}
	t.Run("both-missing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "pool")
		cfg := Config{Name: "unit", DataFile: filepath.Join(dir, "data"), MetadataFile: filepath.Join(dir, "meta"),
			DataSize: 1 << 20, MetadataSize: 1 << 20}
		cfg, _ = cfg.withDefaults()
		p := &Pool{cfg: cfg}
		if fresh, err := p.prepareStorage(); err != nil || !fresh {
			t.Fatalf("both missing: fresh=%v err=%v", fresh, err)
		}
	})
	t.Run("failed-create-leaves-neither", func(t *testing.T) {
		dir := t.TempDir()
		cfg := Config{Name: "unit", DataFile: filepath.Join(dir, "data"), MetadataFile: filepath.Join(dir, "meta"),
			DataSize: 1 << 20, MetadataSize: 0}
		cfg, _ = cfg.withDefaults()
		p := &Pool{cfg: cfg}
		if _, err := p.prepareStorage(); err == nil {
			t.Fatal("a zero metadata size was accepted")
		}
		for _, f := range []string{cfg.DataFile, cfg.MetadataFile} {
			if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left after a failed create: %v", f, err)
			}
		}
	})
}

// TestControlOpenError: with no device-mapper the error names the control
// device once and says to load dm_thin_pool.
func TestControlOpenError(t *testing.T) {
	absent := filepath.Join(t.TempDir(), "control")
	_, err := os.OpenFile(absent, os.O_RDWR, 0)
	got := controlOpenError(absent, err)
	msg := got.Error()
	if !errors.Is(got, ErrNoDeviceMapper) || !errdefs.IsUnavailable(got) || !errors.Is(got, os.ErrNotExist) {
		t.Errorf("%v: want ErrNoDeviceMapper, errdefs unavailable and ErrNotExist", got)
	}
	if strings.Count(msg, absent) != 1 || !strings.Contains(msg, "modprobe dm_thin_pool") {
		t.Errorf("%q: want the path once and 'modprobe dm_thin_pool'", msg)
	}
	perm := controlOpenError(absent, &os.PathError{Op: "open", Path: absent, Err: unix.EACCES})
	if strings.Count(perm.Error(), absent) != 1 || !strings.Contains(perm.Error(), "needs root") {
		t.Errorf("%q: want the path once and 'needs root'", perm)
	}
}

// TestLoadFeaturesReadOnlyAfterAFailedCheck: when the start-up check could
// not show the metadata sound, the pool is loaded with read_only, whatever
// needs_check says on disk (a failed pool may not have it written).
func TestLoadFeaturesReadOnlyAfterAFailedCheck(t *testing.T) {
	p := &Pool{cfg: Config{SkipBlockZeroing: false}}
	if f := p.loadFeatures(); slices.Contains(f, "read_only") {
		t.Fatalf("features %v: read_only without a failed check", f)
	}
	p.loadReadOnly = true
	if f := p.loadFeatures(); !slices.Contains(f, "read_only") || !slices.Contains(f, "error_if_no_space") {
		t.Fatalf("features %v after a failed check: want read_only and the config's", f)
	}
}

// TestStableEventsRereadsAMovingCounter: a status whose counter moved by
// the time it was read again is read again, so a trip out of space and
// back between the counter and the mode is never seen as one quiet event.
func TestStableEventsRereadsAMovingCounter(t *testing.T) {
	reads, counters := 0, []uint32{6, 6}
	read := func() (Status, error) {
		reads++
		if reads == 1 {
			return Status{EventNr: 5}, nil // counter read before the trip, mode after it
		}
		return Status{EventNr: 6}, nil
	}
	n := 0
	counter := func() (uint32, error) { c := counters[n]; n++; return c, nil }
	s, err := stableEvents(context.Background(), read, counter)
	if err != nil || s.EventNr != 6 || reads != 2 {
		t.Fatalf("stableEvents: %+v, %v after %d reads; want counter 6 after 2 reads", s, err, reads)
	}
	// A counter that never settles is reported as at least two events.
	m := uint32(0)
	s, err = stableEvents(context.Background(), func() (Status, error) { m++; return Status{EventNr: m}, nil }, func() (uint32, error) { return m + 1, nil })
	if err != nil || s.EventNr != m+2 {
		t.Fatalf("unsettled counter: %+v, %v; want %d", s, err, m+2)
	}
}

func TestUnmarshalDeps(t *testing.T) {
	data := make([]byte, 8+2*8)
	binary.NativeEndian.PutUint32(data, 2)
	binary.NativeEndian.PutUint64(data[8:], unix.Mkdev(253, 4))
	binary.NativeEndian.PutUint64(data[16:], unix.Mkdev(7, 300))
	got, err := unmarshalDeps(data)
	if err != nil || len(got) != 2 || got[0] != [2]uint32{253, 4} || got[1] != [2]uint32{7, 300} {
		t.Fatalf("unmarshalDeps = %v, %v", got, err)
	}
	if _, err := unmarshalDeps(data[:16]); err == nil {
		t.Error("a reply shorter than its count accepted")
	}
	if _, err := unmarshalDeps(data[:4]); err == nil {
		t.Error("a reply without a count accepted")
	}
}
