package main

import (
	"fmt"
	"io"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/units"
)

// printOrigins shows the lazily-backed origins: how far each fetch is,
// what serves it, and the read errors containers got from it.
func printOrigins(w io.Writer, os []admin.Origin, now time.Time) {
	if len(os) == 0 {
		return
	}
	fmt.Fprintln(w)
	t := newTable(w)
	fmt.Fprintln(t, "ORIGIN\tSTATE\tCHUNKS\tBYTES\tDEVICE\tON DEMAND\tPREFETCHED\tREAD ERRORS")
	for _, o := range os {
		fmt.Fprintf(t, "%s\t%s\t%d/%d\t%s/%s\t%s\t%d\t%d\t%d\n", o.Name, o.State, o.ChunksPresent, o.ChunksTotal,
			units.Bytes(o.BytesPresent), units.Bytes(o.BytesTotal), dash(o.Device), o.OnDemandFetches, o.Prefetched, o.ReadErrors)
	}
	t.Flush()
	for _, o := range os {
		if o.LastError == "" {
			continue
		}
		at := ""
		if o.LastErrorAt != nil {
			at = " (" + units.Ago(*o.LastErrorAt, now) + ")"
		}
		fmt.Fprintf(w, "  origin %s: last error%s: %s\n", o.Name, at, o.LastError)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
