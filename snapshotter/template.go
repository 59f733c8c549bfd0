package snapshotter

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
)

// templateName identifies the template of one filesystem type and size.
func templateName(fsType string, size uint64) string {
	return fmt.Sprintf("%s-%d", fsType, size)
}

func (s *Snapshotter) templateLock(name string) *sync.Mutex {
	s.templatesMu.Lock()
	defer s.templatesMu.Unlock()
	mu, ok := s.templates[name]
	if !ok {
		mu = &sync.Mutex{}
		s.templates[name] = mu
	}
	return mu
}

// templateTimeout bounds the making of one template (mkfs included).
const templateTimeout = 10 * time.Minute

// template returns the empty, formatted template device for fsType and
// size, making it the first time it is asked for. Only that first
// parentless Prepare pays for mkfs; every later one is a create_snap.
//
// The template is made on a context of its own, not the caller's: a
// caller that gives up (containerd's timeout, a client's ^C) gets its
// error at once, while the template is finished for the next caller
// instead of being orphaned half-formatted.
func (s *Snapshotter) template(ctx context.Context, fsType string, size uint64) (*metadata.Template, error) {
	name := templateName(fsType, size)
	if tp, err := s.lookupTemplate(name); err == nil || !errdefs.IsNotFound(err) {
		return tp, err
	}
	type result struct {
		tp  *metadata.Template
		err error
	}
	done := make(chan result, 1)
	started := s.goBackground(func() {
		mu := s.templateLock(name)
		mu.Lock()
		defer mu.Unlock()
		if tp, err := s.lookupTemplate(name); err == nil || !errdefs.IsNotFound(err) {
			done <- result{tp, err}
			return
		}
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), templateTimeout)
		defer cancel()
		tp, err := s.makeTemplate(mctx, name, fsType, size)
		done <- result{tp, err}
	})
	if !started {
		return nil, fmt.Errorf("template %s: the snapshotter is closing: %w", name, errdefs.ErrUnavailable)
	}
	select {
	case r := <-done:
		return r.tp, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("template %s: %w (it is still being made, for the next caller)", name, ctx.Err())
	}
}

// forgetTemplate drops the record of template name when its device id is
// no longer in the pool (create_snap from it said not found), so that the
// next caller makes a new one instead of every parentless Prepare failing
// until gc runs. The old device record is kept, orphaned, for gc to check
// against the pool and report. A record that already points elsewhere (a
// concurrent caller healed it) is left alone.
func (s *Snapshotter) forgetTemplate(ctx context.Context, name string, id uint32, cause error) {
	mu := s.templateLock(name)
	mu.Lock()
	defer mu.Unlock()
	forgot := false
	err := s.store.Update(func(tx *metadata.Tx) error {
		tp, err := tx.Template(name)
		if err != nil || tp.DeviceID != id {
			return nil
		}
		if err := tx.DeleteTemplate(name); err != nil {
			return err
		}
		forgot = true
		err = markDevice(tx, id, metadata.DeviceOrphaned, fmt.Errorf("template device missing from the pool: %w", cause))
		if errdefs.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		log.G(ctx).WithError(err).Errorf("forgetting template %s whose device %s is missing", name, s.deviceName(id))
	} else if forgot {
		log.G(ctx).WithError(cause).Warnf("template %s: its device %s is missing from the pool; making a new template (run 'flyio-image-manager gc' to review the old record)", name, s.deviceName(id))
	}
}

func (s *Snapshotter) lookupTemplate(name string) (*metadata.Template, error) {
	var tp *metadata.Template
	err := s.store.View(func(tx *metadata.Tx) (err error) {
		tp, err = tx.Template(name)
		return err
	})
	return tp, err
}

func (s *Snapshotter) makeTemplate(ctx context.Context, name, fsType string, size uint64) (*metadata.Template, error) {
	var id uint32
	var op *metadata.Op
	var before metadata.PoolTrouble
	err := s.store.Update(func(tx *metadata.Tx) (err error) {
		if before, err = tx.PoolTrouble(); err != nil {
			return err
		}
		if id, err = tx.AllocateDeviceID(); err != nil {
			return err
		}
		if err := tx.PutDevice(&metadata.Device{
			ID: id, Name: s.deviceName(id), Size: size,
			State: metadata.DeviceCreating, Role: metadata.RoleTemplate, Owner: name,
		}); err != nil {
			return err
		}
		op, err = tx.BeginOp("template", name, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	failpoint.Hit(failpoint.TemplateAfterReserve)
	ctx = s.withDevice(withFields(ctx, log.Fields{fieldTemplate: name}), id)
	devName := s.deviceName(id)
	log.G(ctx).Infof("creating %s template %s on thin device %s", fsType, name, devName)
	if err := s.pool.CreateThin(ctx, id); err != nil {
		s.abandonDevice(ctx, id, "", op, err, false)
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	failpoint.Hit(failpoint.TemplateAfterCreateThin)
	if err := s.step(op, "device-created"); err != nil {
		return nil, err
	}
	devPath, err := s.pool.Activate(ctx, devName, id, size)
	if err == nil {
		err = s.format(ctx, fsType, devPath)
	}
	if err == nil {
		failpoint.Hit(failpoint.TemplateAfterMkfs)
		if err = s.noteDevice(ctx, devName); err == nil {
			err = s.pool.Deactivate(ctx, devName)
		}
	}
	if err == nil {
		// Every snapshot of the template shares its blocks: a write
		// of mkfs lost to pool trouble would be in all of them. Judged
		// as Commit judges a snapshot (trouble.go).
		err = s.templateTroubleError(ctx, before, devName)
	}
	if err != nil {
		s.abandonDevice(ctx, id, "", op, err, true)
		return nil, fmt.Errorf("template %s on %s: %w", name, devName, err)
	}
	failpoint.Hit(failpoint.TemplateAfterDeactivate)
	tp := &metadata.Template{Name: name, FSType: fsType, Size: size, DeviceID: id, Created: time.Now().UTC()}
	err = s.store.Update(func(tx *metadata.Tx) error {
		if err := tx.PutTemplate(tp); err != nil {
			return err
		}
		if err := markDevice(tx, id, metadata.DeviceReady, nil); err != nil {
			return err
		}
		return tx.EndOp(op)
	})
	return tp, err
}

// formatEmpty makes a filesystem on dev and leaves it truly empty: ext4's
// lost+found is removed, so a container's rootfs starts with nothing in it.
// Inode tables are initialised now (lazy_itable_init=0) so that the
// kernel's lazy init never writes into, and allocates blocks for, every
// snapshot made from the template.
//
// The mount for that goes under mountDir, where a daemon killed during it
// leaves it for the next start to unmount.
func formatEmpty(ctx context.Context, mountDir, fsType, dev string) error {
	var cmd *exec.Cmd
	switch fsType {
	case "ext4":
		cmd = exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0",
			"-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", dev)
	case "xfs":
		cmd = exec.CommandContext(ctx, "mkfs.xfs", "-q", "-f", "-K", dev)
	default:
		return fmt.Errorf("unsupported filesystem %q", fsType)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", cmd.Path, dev, err, strings.TrimSpace(string(out)))
	}
	if fsType != "ext4" {
		return nil
	}
	dir, err := os.MkdirTemp(mountDir, "template-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := unix.Mount(dev, dir, "ext4", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount %s to remove lost+found: %w", dev, err)
	}
	failpoint.Hit(failpoint.TemplateMounted)
	rmErr := os.Remove(filepath.Join(dir, "lost+found"))
	if err := unix.Unmount(dir, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	if rmErr != nil {
		return fmt.Errorf("remove lost+found from %s: %w", dev, rmErr)
	}
	return nil
}

// templateTroubleError refuses a template written while the pool had
// trouble that can have hit it: before is the trouble on record when it
// was begun, devName its device. A kernel I/O error named on another
// thin device did not touch it; anything else (a mode change, the pool's
// own devices, its own device, records lost) did, or may have.
func (s *Snapshotter) templateTroubleError(ctx context.Context, before metadata.PoolTrouble, devName string) error {
	pt, now, err := s.observeTrouble(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("cannot tell whether the template's writes were lost: %w", err)
	case now != "":
		return fmt.Errorf("the pool is %s: the template's writes may have been lost; it is made again by the next Prepare: %w", now, errdefs.ErrUnavailable)
	case pt.Generation <= before.Generation:
		return nil
	}
	seen := uint64(0)
	for _, e := range pt.Recent {
		if e.Generation <= before.Generation {
			continue
		}
		seen++
		if !otherThinDevice(e.Reason, s.pool.Name(), devName) {
			return fmt.Errorf("the pool had trouble while the template was written (%s): its writes may have been lost; it is made again by the next Prepare: %w",
				e.Reason, errdefs.ErrUnavailable)
		}
	}
	if seen < pt.Generation-before.Generation {
		// More bumps than the history keeps: some are unknown.
		return fmt.Errorf("the pool had trouble %d times while the template was written: its writes may have been lost; it is made again by the next Prepare: %w",
			pt.Generation-before.Generation, errdefs.ErrUnavailable)
	}
	return nil
}

// otherThinDevice reports whether a trouble reason is only a kernel I/O
// error on a thin device of pool other than devName.
func otherThinDevice(reason, pool, devName string) bool {
	rest, ok := strings.CutPrefix(reason, kernelReasonPrefix+" on dm-")
	if !ok || strings.Contains(reason, "; ") {
		return false
	}
	_, after, ok := strings.Cut(rest, " (")
	if !ok {
		return false
	}
	name, _, ok := strings.Cut(after, ")")
	return ok && strings.HasPrefix(name, pool+"-thin-") && name != devName
}
