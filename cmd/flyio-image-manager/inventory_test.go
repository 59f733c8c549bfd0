package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
)

func TestWriteImagesTable(t *testing.T) {
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	imgs := []admin.ImageInfo{{
		ID: "busybox", Ref: "images.flyio.local/busybox:latest", Key: "images/busybox.tar", ETag: `"0123456789abcdef0123"`,
		Digest: "sha256:" + strings.Repeat("ab", 32), Size: 3 << 20, CompressedSize: 1536 << 10,
		DeviceID: 7, DeviceName: "pool-thin-7", Usage: 5 << 20, Dependants: []string{"test/9/c1", "test/10/c2"},
		Created: now.Add(-3 * time.Minute),
	}, {ID: "gone", Ref: "r", Key: "images/gone.tar", Usage: -1, Dependants: []string{}, Created: now.Add(-50 * time.Hour)}}
	var b bytes.Buffer
	if err := writeImages(&b, imgs, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", b.String())
	}
	// Aligned: every column starts where its header does.
	for _, col := range []string{"SIZE", "USAGE", "DEPENDANTS", "CREATED"} {
		at := strings.Index(lines[0], col)
		if at < 0 {
			t.Fatalf("no %s column in %q", col, lines[0])
		}
		for _, l := range lines[1:] {
			if at >= len(l) || l[at-1] != ' ' || l[at] == ' ' {
				t.Errorf("column %s not aligned in %q", col, l)
			}
		}
	}
	for _, want := range []string{"3 MiB", "1.5 MiB", "5 MiB", "sha256:abababababab ", "0123456789abcdef...", " 2 ", "3m00s ago"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if f := strings.Fields(lines[2]); f[5] != "-" || f[7] != "-" || f[8] != "-" || f[9] != "0" {
		t.Errorf("row of an image without run or base = %q, want dashes and 0 dependants", lines[2])
	}
	b.Reset()
	writeImages(&b, nil, now)
	if !strings.Contains(b.String(), "no imported images") {
		t.Errorf("empty list printed %q", b.String())
	}
}

func TestWriteSnapshotsTree(t *testing.T) {
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	tree := admin.SnapshotTree{
		Pool: "p", UsageSource: "pool metadata",
		Roots: []*admin.SnapshotNode{{
			Key: "test/1/sha256:base", Kind: "Committed", State: "ready", DeviceID: 3, DeviceName: "p-thin-3",
			Size: 256 << 20, Usage: 10 << 20, Created: now.Add(-time.Hour),
			Children: []*admin.SnapshotNode{{
				Key: "test/2/c1", Kind: "Active", State: "ready", DeviceID: 5, DeviceName: "p-thin-5", Active: true,
				Size: 256 << 20, Usage: 10<<20 + 4096, Created: now.Add(-time.Minute),
			}},
		}},
		Devices: []admin.DeviceInfo{
			{ID: 1, Name: "p-thin-1", Role: "template", State: "ready", Owner: "ext4-256MiB", Size: 256 << 20, Usage: 8 << 20, Created: now},
			{ID: 2, Name: "p-thin-2", Role: "spare", State: "ready", Origin: 1, Active: true, Size: 256 << 20, Usage: 0, Created: now},
		},
	}
	var b bytes.Buffer
	if err := writeSnapshots(&b, tree, false, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[1], "test/1/sha256:base ") || !strings.HasPrefix(lines[2], "  \\_ test/2/c1 ") {
		t.Errorf("tree not drawn like ctr snapshots tree:\n%s", out)
	}
	if strings.Index(lines[1], "Committed") != strings.Index(lines[2], "Active") {
		t.Errorf("KIND column not aligned:\n%s", out)
	}
	for _, want := range []string{"p-thin-5", "10 MiB", "256 MiB", "1h00m ago", "2 snapshot(s) in pool p; usage from pool metadata", "2 other device(s) (1 template, 1 spare); --all lists them"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	writeSnapshots(&b, tree, true, now)
	if out := b.String(); !strings.Contains(out, "ROLE") || !strings.Contains(out, "ext4-256MiB") || !strings.Contains(out, "spare") {
		t.Errorf("--all lacks the other devices:\n%s", out)
	}
}
