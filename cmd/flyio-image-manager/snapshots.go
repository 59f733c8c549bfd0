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

var snapshotsCommand = &cli.Command{
	Name:  "snapshots",
	Usage: "show the snapshots as a tree (like ctr snapshots tree) with their thin devices and usage",
	Description: `Each snapshot is shown under its parent with its kind, state, thin device
id and device-mapper name, virtual SIZE and USAGE (data the device maps,
read from a metadata snapshot of the pool; shared blocks count for every
device that maps them). --all adds the devices no snapshot owns:
templates, spares, and devices being created, deleted, orphaned or
quarantined. --json includes labels.`,
	Flags: []cli.Flag{
		jsonFlag,
		&cli.BoolFlag{Name: "all", Usage: "also list templates, spares and other devices no snapshot owns"},
	},
	Subcommands: []*cli.Command{acceptLostWritesCommand},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		tree, err := admin.NewClient(cfg.AdminAddress).Snapshots(c.Context)
		if err != nil {
			return err
		}
		if c.Bool("json") {
			if !c.Bool("all") {
				tree.Devices = nil
			}
			return printJSON(c.App.Writer, tree)
		}
		return writeSnapshots(c.App.Writer, tree, c.Bool("all"), time.Now())
	},
}

// treeName is the NAME column: the key indented under its parent the way
// ctr snapshots tree draws it.
func treeName(key string, depth int) string {
	if depth == 0 {
		return key
	}
	return strings.Repeat("  ", depth) + "\\_ " + key
}

// writeSnapshots prints the tree as an aligned table, and with all the
// other devices after it.
func writeSnapshots(w io.Writer, tree admin.SnapshotTree, all bool, now time.Time) error {
	t := newTable(w)
	n := 0
	fmt.Fprintln(t, "NAME\tKIND\tSTATE\tDEVICE\tDM NAME\tACTIVE\tSIZE\tUSAGE\tCREATED")
	tree.Walk(func(s *admin.SnapshotNode, depth int) {
		n++
		fmt.Fprintf(t, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", treeName(s.Key, depth), s.Kind, s.State,
			s.DeviceID, s.DeviceName, activeMark(s.Active), units.Bytes(s.Size), mappedOrDash(s.Usage), units.Ago(s.Created, now))
	})
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d snapshot(s) in pool %s; usage from %s", n, tree.Pool, tree.UsageSource)
	if tree.UsageError != "" {
		fmt.Fprintf(w, " (%s)", tree.UsageError)
	}
	fmt.Fprintln(w)
	if !all {
		if len(tree.Devices) > 0 {
			fmt.Fprintf(w, "%d other device(s) (%s); --all lists them\n", len(tree.Devices), roles(tree.Devices))
		}
		return nil
	}
	fmt.Fprintln(w)
	if len(tree.Devices) == 0 {
		_, err := fmt.Fprintln(w, "no other devices")
		return err
	}
	t = newTable(w)
	fmt.Fprintln(t, "DEVICE\tDM NAME\tROLE\tSTATE\tOWNER\tORIGIN\tACTIVE\tSIZE\tUSAGE\tCREATED\tERROR")
	for _, d := range tree.Devices {
		origin, owner, errText := "-", d.Owner, d.Error
		if d.Origin != 0 {
			origin = fmt.Sprint(d.Origin)
		}
		if owner == "" {
			owner = "-"
		}
		if errText == "" {
			errText = "-"
		}
		fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Name, d.Role, d.State, owner, origin,
			activeMark(d.Active), units.Bytes(d.Size), mappedOrDash(d.Usage), units.Ago(d.Created, now), errText)
	}
	return t.Flush()
}

// roles summarises devices by role and state: "1 template, 2 spare".
func roles(devs []admin.DeviceInfo) string {
	counts := map[string]int{}
	var order []string
	for _, d := range devs {
		k := d.Role
		if d.State != "ready" {
			k += " " + d.State
		}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = fmt.Sprintf("%d %s", counts[k], k)
	}
	return strings.Join(parts, ", ")
}

func activeMark(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
