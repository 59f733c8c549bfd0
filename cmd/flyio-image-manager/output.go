package main

import (
	"encoding/json"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// jsonFlag is on every listing: scripts read --json, people read tables.
var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a writer that aligns tab-separated columns; call Flush
// when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}
