package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
)

// TestPrintTrouble: status shows the trouble generation, the latest
// trouble and the snapshots Commit would refuse.
func TestPrintTrouble(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 39, 33, 0, time.UTC)
	var b bytes.Buffer
	printTrouble(&b, &admin.PoolTrouble{Generation: 2, LastReason: "pool out of data space", LastAt: &at, RefusedAtCommit: 1}, at.Add(3*time.Hour))
	for _, want := range []string{"trouble:   generation 2, last: pool out of data space (", "3h", "1 active snapshot(s) would be refused at Commit"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("printTrouble lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printTrouble(&b, &admin.PoolTrouble{}, at)
	if got := b.String(); got != "  trouble:   none seen (generation 0)\n" {
		t.Errorf("no trouble printed %q", got)
	}
	b.Reset()
	if printTrouble(&b, nil, at); b.Len() != 0 {
		t.Errorf("an old daemon's status printed %q", b.String())
	}
}

// TestAcceptLostWritesNeedsKeyAndGeneration: both flags are required,
// and the command is under snapshots (which still lists without it).
func TestAcceptLostWritesNeedsKeyAndGeneration(t *testing.T) {
	cfg := emptyConfig(t)
	_, err := runApp(t, "--config", cfg, "snapshots", "accept-lost-writes", "--key", "default/4/c")
	wantErr(t, err, "generation")
	_, err = runApp(t, "--config", cfg, "snapshots", "accept-lost-writes", "--key", "default/4/c", "--generation", "2")
	wantErr(t, err, "not running")
	_, err = runApp(t, "--config", cfg, "snapshots", "--all")
	wantErr(t, err, "not running")
}
