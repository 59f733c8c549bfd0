package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
)

func TestRunViewFigures(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := admin.Run{ID: "r1", State: admin.RunExtracting, Key: "images/a.tar", Size: 4 << 20, CompressedBytes: 1 << 20, Entries: 7, Created: created}
	v := newRunView(r, created.Add(2*time.Second))
	if v.ElapsedSeconds != 2 || v.Percent != 25 || v.RateBytesPerSecond != 512<<10 {
		t.Errorf("view = %+v", v)
	}
	var b bytes.Buffer
	printRun(&b, v)
	for _, want := range []string{"state:     extracting", "1 MiB of 4 MiB (25.0%) read, 7 entries", "rate:      512 KiB/s", "elapsed:   2s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("printRun lacks %q:\n%s", want, b.String())
		}
	}
	// A finished run's elapsed time stops at its last update.
	r.State, r.Updated = admin.RunCancelled, created.Add(time.Second)
	if v := newRunView(r, created.Add(time.Hour)); v.ElapsedSeconds != 1 {
		t.Errorf("finished run elapsed %v, want 1s", v.ElapsedSeconds)
	}
}

func TestPrintQueues(t *testing.T) {
	var b bytes.Buffer
	printQueues(&b, []admin.QueueInfo{
		{Name: "downloads", Capacity: 3},
		{Name: "unpacks", Capacity: 1, Active: 1, Waiting: 1, Runs: []admin.QueuedRun{
			{ID: "a", Key: "images/a.tar", State: admin.RunExtracting},
			{ID: "b", Key: "images/b.tar", State: admin.RunQueued, Position: 1},
		}},
	})
	want := `QUEUE      CAPACITY  ACTIVE  WAITING
downloads  3         0       0
unpacks    1         1       1

QUEUE    POS     RUN  STATE       S3 KEY
unpacks  active  a    extracting  images/a.tar
unpacks  1       b    queued      images/b.tar
`
	if b.String() != want {
		t.Errorf("printQueues:\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintGCProbes(t *testing.T) {
	var b bytes.Buffer
	printGCProbes(&b, []admin.GCProbe{{Name: "pool-gcprobe-7", ThinID: 7, OpenCount: 1}})
	for _, want := range []string{"gc probe:  pool-gcprobe-7 (thin id 7, open 1)", "dmsetup remove pool-gcprobe-7"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("printGCProbes lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if printGCProbes(&b, nil); b.Len() != 0 {
		t.Errorf("no probes printed %q", b.String())
	}
}
