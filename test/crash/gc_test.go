package crash

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/superfly/flyio-image-manager/gc"
)

// gcReport runs `gc --json --min-age 0s` with --dry-run or --force and
// decodes its report. A forced run that could not remove an item exits
// non-zero; its report is still returned, with the error.
func (e *env) gcReport(force bool) (*gc.Report, error) {
	e.T.Helper()
	mode := "--dry-run"
	if force {
		mode = "--force"
	}
	out, err := e.Fim("gc", mode, "--json", "--min-age", "0s")
	var rep gc.Report
	// The JSON is printed before a non-zero exit for failed items.
	if i := strings.Index(out, "{"); i >= 0 {
		if jerr := json.NewDecoder(strings.NewReader(out[i:])).Decode(&rep); jerr == nil {
			return &rep, err
		}
	}
	if err == nil {
		err = fmt.Errorf("gc %s: no JSON report in its output:\n%s", mode, out)
	}
	return nil, err
}

// leftover is an item of a gc report as the matrix compares them: its
// kind, whether its device is in the pool, and for snapshots the key up
// to the first "/" of a generated part ("remote-fill/").
func leftover(it gc.Item) string {
	s := string(it.Kind)
	if !it.InPool {
		s += " not-in-pool"
	}
	if it.Snapshot != "" {
		k := it.Snapshot
		if i := strings.Index(k, "/"); i >= 0 {
			k = k[:i+1]
		}
		s += " " + k
	}
	if it.Blocked != "" {
		s += " blocked"
	}
	return s
}

func leftovers(rep *gc.Report) []string {
	out := make([]string, 0, len(rep.Items))
	for _, it := range rep.Items {
		out = append(out, leftover(it))
	}
	slices.Sort(out)
	return out
}

func itemIDs(rep *gc.Report) []string {
	out := make([]string, 0, len(rep.Items))
	for _, it := range rep.Items {
		out = append(out, fmt.Sprintf("%s/%d/%s", it.Kind, it.DeviceID, it.Snapshot))
	}
	slices.Sort(out)
	return out
}

// collect checks that gc's dry run lists exactly want (leftover strings,
// any order), that gc --force removes those very items and nothing fails,
// and that a second dry run is empty. It returns the first dry run's
// items for the log.
func (e *env) collect(fp string, want []string) string {
	e.T.Helper()
	want = slices.Clone(want)
	slices.Sort(want)
	plan, err := e.gcReport(false)
	if err != nil {
		e.T.Fatalf("after %s: gc --dry-run: %v", fp, err)
	}
	got := leftovers(plan)
	if !slices.Equal(got, want) {
		b, _ := json.MarshalIndent(plan.Items, "", "  ")
		e.T.Errorf("after %s: gc --dry-run lists %q, want %q:\n%s", fp, got, want, b)
	}
	var desc []string
	for _, it := range plan.Items {
		d := fmt.Sprintf("%s dev %d", it.Kind, it.DeviceID)
		if it.Snapshot != "" {
			d += " " + it.Snapshot
		}
		if !it.InPool {
			d += " (not in pool)"
		}
		desc = append(desc, d)
	}
	if len(plan.Items) == 0 {
		return "nothing"
	}
	done, err := e.gcReport(true)
	if err != nil {
		e.T.Errorf("after %s: gc --force: %v", fp, err)
	}
	if done != nil {
		if !slices.Equal(itemIDs(done), itemIDs(plan)) {
			e.T.Errorf("after %s: gc --force worked on %q, the dry run listed %q", fp, itemIDs(done), itemIDs(plan))
		}
		if done.Failed != 0 || done.Removed != len(plan.Items) {
			b, _ := json.MarshalIndent(done.Items, "", "  ")
			e.T.Errorf("after %s: gc --force removed %d, failed %d of %d:\n%s", fp, done.Removed, done.Failed, len(plan.Items), b)
		}
	}
	again, err := e.gcReport(false)
	if err != nil {
		e.T.Fatalf("after %s: second gc --dry-run: %v", fp, err)
	}
	if len(again.Items) != 0 {
		b, _ := json.MarshalIndent(again.Items, "", "  ")
		e.T.Errorf("after %s: gc --dry-run after gc --force still lists:\n%s", fp, b)
	}
	return strings.Join(desc, ", ")
}
