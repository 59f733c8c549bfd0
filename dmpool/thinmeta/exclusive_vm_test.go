package thinmeta

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/harness"
)

// TestReadPoolExclusiveOnRealDmThin: a device with 512 mapped blocks
// (a btree of three leaves under an internal node) and a snapshot of it
// that overwrote 32 of them and wrote 8 new ones. ReadPoolExclusive
// says the snapshot holds 40 blocks of its own, as thin_ls's
// EXCLUSIVE_BLOCKS does (for a device nothing is a snapshot of, the
// two definitions agree), and the origin, read without an origin, all
// 512.
func TestReadPoolExclusiveOnRealDmThin(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()
	pool, cfg := harness.LoopPool(t, fmt.Sprintf("fim-exclusive-%d", os.Getpid()), 1<<30, 16<<20)
	const block = 128 << 10
	write := func(id uint32, blocks ...int64) {
		t.Helper()
		name := fmt.Sprintf("%s-w%d", cfg.Name, id)
		harness.WriteThin(t, pool, name, id, 256<<20, func(f *os.File) error {
			buf := make([]byte, block)
			for _, b := range blocks {
				rand.Read(buf)
				if _, err := f.WriteAt(buf, b*block); err != nil {
					return err
				}
			}
			return nil
		})
		if err := pool.Deactivate(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := pool.CreateThin(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var all []int64
	for b := int64(0); b < 512; b++ {
		all = append(all, b)
	}
	write(1, all...)
	if err := pool.CreateSnapshot(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	var changed []int64
	for b := int64(0); b < 512; b += 16 {
		changed = append(changed, b)
	}
	for b := int64(1000); b < 1008; b++ {
		changed = append(changed, b)
	}
	write(2, changed...)

	u, err := ReadPoolExclusive(ctx, cfg.Name, []Pair{{Device: 1}, {Device: 2, Origin: 1, HasOrigin: true}})
	if err != nil {
		t.Fatal(err)
	}
	if u.DataBlockSize != block {
		t.Errorf("block size %d", u.DataBlockSize)
	}
	if g := u.Devices[2]; g != (Exclusive{Blocks: 40, OriginFound: true}) {
		t.Errorf("snapshot: %+v, want 40 blocks of its own", g)
	}
	if g := u.Devices[1]; g.Blocks != 512 {
		t.Errorf("origin without an origin: %+v, want all 512 blocks", g)
	}
	if ls := thinLsExclusive(t, cfg.Name); ls[2] != u.Devices[2].Blocks {
		t.Errorf("thin_ls says device 2 has %d exclusive blocks, ReadPoolExclusive %d", ls[2], u.Devices[2].Blocks)
	}
	if st, _ := pool.Status(ctx); st.HeldMetadataRoot != "-" {
		t.Errorf("a metadata snapshot is still held: %s", st.HeldMetadataRoot)
	}
}

// thinLsExclusive runs thin_ls on a metadata snapshot of pool.
func thinLsExclusive(t *testing.T, pool string) map[uint32]uint64 {
	t.Helper()
	bin, err := exec.LookPath("thin_ls")
	if err != nil {
		t.Skipf("no thin_ls to cross-check with: %v", err)
	}
	table, err := dmpool.Table(pool)
	if err != nil {
		t.Fatal(err)
	}
	f, err := openDirect(strings.Fields(table[0].Params)[0])
	if err != nil {
		t.Fatal(err)
	}
	dev := f.Name()
	f.Close()
	if _, err := dmpool.Message(pool, "reserve_metadata_snap"); err != nil {
		t.Fatal(err)
	}
	defer dmpool.Message(pool, "release_metadata_snap")
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, "--metadata-snap", "--no-headers", "-o", "DEV,EXCLUSIVE_BLOCKS", dev)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("thin_ls: %v: %s", err, errb.String())
	}
	got := map[uint32]uint64{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		id, _ := strconv.ParseUint(f[0], 10, 32)
		n, _ := strconv.ParseUint(f[1], 10, 64)
		got[uint32(id)] = n
	}
	t.Logf("thin_ls: %v", got)
	return got
}
