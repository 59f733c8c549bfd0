package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/units"
)

// printTrouble is status's trouble line: the pool trouble generation,
// its latest cause, and how many active snapshots Commit would refuse.
// A daemon that predates it sends none: nothing is printed.
func printTrouble(w io.Writer, pt *admin.PoolTrouble, now time.Time) {
	if pt == nil {
		return
	}
	if pt.Generation == 0 {
		fmt.Fprintf(w, "  trouble:   none seen (generation 0)\n")
	} else {
		at := "-"
		if pt.LastAt != nil {
			at = pt.LastAt.Local().Format(time.RFC3339) + ", " + units.Ago(*pt.LastAt, now)
		}
		fmt.Fprintf(w, "  trouble:   generation %d, last: %s (%s)\n", pt.Generation, pt.LastReason, at)
	}
	if pt.RefusedAtCommit > 0 {
		fmt.Fprintf(w, "             %d active snapshot(s) would be refused at Commit (their writes may have been lost): see TROUBLESHOOTING.md, \"commit ... refused\"\n", pt.RefusedAtCommit)
	}
}

var acceptLostWritesCommand = &cli.Command{
	Name:  "accept-lost-writes",
	Usage: "let one container snapshot that Commit refuses for pool trouble be committed, accepting that its writes may have been lost",
	Description: `Commit refuses an active snapshot prepared before pool trouble (out of
space, read-only, failed, unexplained device-mapper events): writes to it
may have failed in writeback with nobody told. A layer being unpacked is
unpacked again by a retried pull; a container's writable layer cannot be
written again. This command, for one such snapshot (--key, our key as the
refusal and 'snapshots' name it), accepts the trouble up to --generation
(the "trouble generation N" of the refusal), so that a Commit after it is
judged as if the snapshot had been prepared then. Files in it may have
holes: check them. The daemon logs the acceptance and records it on the
snapshot and on the layer committed from it. The pool must be healthy
now; trouble after the generation still refuses. Unpacks, process-image
imports and remote fills are refused: retry them instead.`,
	Flags: []cli.Flag{
		jsonFlag,
		&cli.StringFlag{Name: "key", Usage: "the active snapshot's `KEY` (e.g. default/12/my-container)", Required: true},
		&cli.Uint64Flag{Name: "generation", Usage: "accept the trouble up to this trouble generation `N` (named in Commit's refusal)", Required: true},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		res, err := admin.NewClient(cfg.AdminAddress).AcceptLostWrites(c.Context,
			admin.AcceptLostWritesRequest{Key: c.String("key"), Generation: c.Uint64("generation")})
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(c.App.Writer, res)
		}
		printAccepted(c.App.Writer, res)
		return nil
	},
}

func printAccepted(w io.Writer, res admin.AcceptLostWritesResult) {
	fmt.Fprintf(w, "snapshot %s: trouble generations %d to %d accepted (the pool's is %d)\n", res.Key, res.From+1, res.To, res.PoolGeneration)
	if len(res.Reasons) > 0 {
		fmt.Fprintf(w, "  accepted: %s\n", strings.Join(res.Reasons, "; "))
	}
	if res.StillRefused {
		fmt.Fprintf(w, "Commit still refuses it: the pool had trouble after generation %d\n", res.To)
		return
	}
	fmt.Fprintln(w, "its Commit is no longer refused for them; files in it may have holes: check them")
}
