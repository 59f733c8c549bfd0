package gc

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/superfly/flyio-image-manager/internal/units"
)

// WriteTable prints the report for operators.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "pool %s; containerd: %s; snapshots younger than %s are not considered\n",
		r.Pool, r.Containerd, r.MinAge.String())
	if len(r.Items) == 0 {
		_, err := fmt.Fprintln(w, "nothing to clean")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tDEVICE\tSNAPSHOT/TEMPLATE\tSPACE\tSTATUS\tDETAIL")
	for _, it := range r.Items {
		name := it.Snapshot
		if it.Template != "" {
			name = "template " + it.Template
		}
		if name == "" {
			name = "-"
		}
		dev := "-"
		if it.DeviceID != 0 {
			dev = strconv.FormatUint(uint64(it.DeviceID), 10)
		}
		space := units.Bytes(it.Bytes)
		if !it.InPool {
			space = "not in pool"
		}
		status := "would remove"
		switch {
		case it.Blocked != "":
			status = "kept: " + it.Blocked
		case it.Removed:
			status = "removed"
		case it.Error != "":
			status = "FAILED: " + it.Error
		case !r.DryRun:
			status = "not removed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.Kind, dev, name, space, status, it.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.DryRun {
		_, err := fmt.Fprintf(w, "%d item(s), %s mapped; run 'flyio-image-manager gc --force' to remove them\n", len(r.Items), units.Bytes(r.TotalBytes))
		return err
	}
	_, err := fmt.Fprintf(w, "%d removed, %d failed, %s mapped before removal\n", r.Removed, r.Failed, units.Bytes(r.TotalBytes))
	return err
}

// String prints the duration like time.Duration.
func (d Duration) String() string { b, _ := d.MarshalText(); return string(b) }
