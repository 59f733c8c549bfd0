package dmpool

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/containerd/log"
)

// thinCheckPath is the thin_check binary checkOnStart runs.
var thinCheckPath = "thin_check"

// checkOnStart is the documented recovery of a pool the kernel made
// read-only with needs_check (a failed write or flush to its data device),
// or failed, done at start when it is safe: only with CheckOnStart, only
// when no thin device of the pool is open (a running container or VMM
// keeps the pool as it is, refusing new work, until it is stopped and the
// daemon restarted), and only with thin_check installed. It deactivates
// the thin devices and the pool, runs thin_check on the now inactive
// metadata and, if it passes, clears needs_check. The metadata holds the
// last committed transaction, so committed data stays; a failed check
// changes nothing on disk (thin_repair is an operator's decision).
//
// It reports true when it removed the pool device, which Open then loads
// again (read-write if the check passed, read-only if it did not).
func (p *Pool) checkOnStart(ctx context.Context) (bool, error) {
	if !p.cfg.CheckOnStart {
		return false, nil
	}
	name := p.cfg.Name
	s, err := p.Status(ctx)
	if err != nil || !(s.NeedsCheck || s.Fail) {
		return false, nil
	}
	lg := log.G(ctx).WithField("pool", name)
	state := "read-only with needs_check"
	if s.Fail {
		state = "failed"
	}
	bin, err := exec.LookPath(thinCheckPath)
	if err != nil {
		lg.WithError(err).Errorf("pool is %s and thin_check is not installed (thin-provisioning-tools): it stays as it is; see docs/OPERATIONS.md", state)
		return false, nil
	}
	// A failed pool's thin devices are listed by their dependency on
	// the pool (the kernel hides their tables): each holds the pool open
	// and must go before it.
	shown, hidden, err := p.listActive(ctx)
	if err != nil {
		return false, err
	}
	active := append(shown, hidden...)
	var open []string
	for _, a := range active {
		if a.OpenCount > 0 {
			open = append(open, a.Name)
		}
	}
	if len(open) > 0 {
		lg.Errorf("pool is %s; thin devices %v are open (running containers or VMs): stop them and restart the daemon to check the pool, see docs/OPERATIONS.md", state, open)
		return false, nil
	}
	lg.Warnf("pool is %s: deactivating its %d thin devices and the pool to run thin_check", state, len(active))
	p.checked = state
	for _, a := range active {
		if err := p.Deactivate(ctx, a.Name); err != nil {
			return false, fmt.Errorf("pool %q is %s: deactivating %s for thin_check: %w", name, state, a.Name, err)
		}
	}
	meta := p.cfg.MetadataDevice
	if p.cfg.usesFiles() {
		meta = p.cfg.MetadataFile
	}
	if err := p.Remove(ctx); err != nil {
		return false, fmt.Errorf("pool %q is %s: removing the pool device for thin_check: %w", name, state, err)
	}
	// From here on the pool device is gone and Open loads it again:
	// read-only unless the check passed and the flag is cleared.
	p.loadReadOnly = true
	out, err := exec.CommandContext(ctx, bin, meta).CombinedOutput()
	if cerr := ctx.Err(); cerr != nil {
		return true, fmt.Errorf("pool %q: thin_check %s did not finish (%w); the pool is loaded again read-only at the next start: run 'thin_check %s' by hand", name, meta, cerr, meta)
	}
	if err != nil {
		lg.WithError(err).Errorf("thin_check %s failed (%v): the metadata may be damaged, or the check could not run; the pool is loaded again read-only. "+
			"Run 'thin_check %s' by hand to see which, and repair only then (thin_repair, docs/OPERATIONS.md):\n%s", meta, err, meta, strings.TrimSpace(string(out)))
		return true, nil
	}
	out, err = exec.CommandContext(ctx, bin, "--clear-needs-check-flag", meta).CombinedOutput()
	if err != nil {
		lg.WithError(err).Errorf("thin_check --clear-needs-check-flag %s failed; the pool is loaded again read-only:\n%s", meta, strings.TrimSpace(string(out)))
		return true, nil
	}
	p.loadReadOnly = false
	lg.Warnf("thin_check %s passed and needs_check is cleared; loading the pool again", meta)
	return true, nil
}
