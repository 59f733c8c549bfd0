package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Admitter is implemented by pools that refuse new work before they run
// out of space (the daemon's pool guard). Claiming a spare creates no
// device, so it asks explicitly.
type Admitter interface {
	Admit(ctx context.Context, what string) error
}

// spares keeps a few activated, empty snapshots of the default template
// ready. A parentless Prepare of the default size then costs one metadata
// transaction instead of a create_snap, a pool metadata commit and an
// activation; the refill happens in the background.
type spares struct {
	s      *Snapshotter
	target int

	mu    sync.Mutex
	ready []*metadata.Device

	kick   chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
	failed time.Time // last refill failure, to back off
}

func newSpares(s *Snapshotter, target int) *spares {
	return &spares{s: s, target: target, kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// load picks up the spares a previous daemon left; reconcile has already
// activated them.
func (sp *spares) load(tpl *metadata.Template) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.s.store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err == nil && d.Role == metadata.RoleSpare && d.State == metadata.DeviceReady && d.Origin == tpl.DeviceID {
				sp.ready = append(sp.ready, d)
			}
			return nil
		})
	})
}

// start runs the refill loop until Close.
func (sp *spares) start(ctx context.Context) {
	ctx, sp.stop = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(sp.done)
		for {
			sp.refill(ctx)
			select {
			case <-ctx.Done():
				return
			case <-sp.kick:
			case <-time.After(30 * time.Second):
			}
		}
	}()
	sp.poke()
}

func (sp *spares) poke() {
	select {
	case sp.kick <- struct{}{}:
	default:
	}
}

func (sp *spares) close() {
	if sp.stop != nil {
		sp.stop()
		<-sp.done
	}
}

func (sp *spares) count() int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return len(sp.ready)
}

// refill makes spares until there are target of them, stopping at the
// first failure (a full pool refuses them like any other device).
func (sp *spares) refill(ctx context.Context) {
	for sp.count() < sp.target && ctx.Err() == nil {
		if time.Since(sp.failed) < 10*time.Second {
			return
		}
		d, err := sp.make(ctx)
		if err != nil {
			sp.failed = time.Now()
			log.G(ctx).WithError(err).Debug("could not make a spare snapshot; parentless Prepares take the slow path")
			return
		}
		sp.mu.Lock()
		sp.ready = append(sp.ready, d)
		sp.mu.Unlock()
	}
}

// make creates and activates one spare, journalled like a Prepare.
func (sp *spares) make(ctx context.Context) (*metadata.Device, error) {
	s := sp.s
	tp, err := s.template(ctx, s.cfg.FSType, s.cfg.BaseSize)
	if err != nil {
		return nil, err
	}
	var d *metadata.Device
	var op *metadata.Op
	err = s.store.Update(func(tx *metadata.Tx) error {
		id, err := tx.AllocateDeviceID()
		if err != nil {
			return err
		}
		d = &metadata.Device{ID: id, Name: s.deviceName(id), Origin: tp.DeviceID, Size: tp.Size,
			State: metadata.DeviceCreating, Role: metadata.RoleSpare, Owner: tp.Name}
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		op, err = tx.BeginOp("spare", tp.Name, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	ctx = s.withDevice(withFields(ctx, log.Fields{fieldTemplate: tp.Name}), d.ID)
	if err := s.pool.CreateSnapshot(ctx, d.ID, tp.DeviceID); err != nil {
		s.abandonDevice(ctx, d.ID, "", op, err, false)
		if errors.Is(err, dmpool.ErrNotFound) {
			s.forgetTemplate(ctx, tp.Name, tp.DeviceID, err) // the next refill makes a new one
		}
		return nil, err
	}
	failpoint.Hit(failpoint.SpareAfterCreateSnap)
	if _, err := s.pool.Activate(ctx, d.Name, d.ID, d.Size); err != nil {
		s.abandonDevice(ctx, d.ID, "", op, err, true)
		return nil, err
	}
	failpoint.Hit(failpoint.SpareAfterActivate)
	err = s.store.Update(func(tx *metadata.Tx) error {
		d.State = metadata.DeviceReady
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		return tx.EndOp(op)
	})
	return d, err
}

// claim turns a ready spare into the snapshot key, or returns nil when
// none is left. The device already exists and is active: the only work is
// one transaction.
func (sp *spares) claim(ctx context.Context, kind snapshots.Kind, key string, labels map[string]string) (*metadata.Snapshot, error) {
	sp.mu.Lock()
	if len(sp.ready) == 0 {
		sp.mu.Unlock()
		sp.poke()
		return nil, nil
	}
	d := sp.ready[len(sp.ready)-1]
	sp.ready = sp.ready[:len(sp.ready)-1]
	sp.mu.Unlock()
	defer sp.poke()

	if a, ok := sp.s.pool.(Admitter); ok {
		if err := a.Admit(ctx, "prepare "+key); err != nil {
			sp.giveBack(d)
			return nil, err
		}
	}
	now := time.Now().UTC()
	rec := &metadata.Snapshot{Key: key, Kind: kind, Labels: labels, Created: now, Updated: now,
		State: metadata.SnapshotReady, DeviceID: d.ID, Size: d.Size, FSType: sp.s.cfg.FSType}
	err := sp.s.store.Update(func(tx *metadata.Tx) error {
		cur, err := tx.Device(d.ID)
		if err != nil {
			return err
		}
		if cur.Role != metadata.RoleSpare || cur.State != metadata.DeviceReady {
			return errStaleSpare
		}
		if err := stampTrouble(tx, rec); err != nil {
			return err
		}
		if err := tx.CreateSnapshot(rec); err != nil {
			return err
		}
		cur.Role, cur.Owner = metadata.RoleSnapshot, key
		return tx.PutDevice(cur)
	})
	switch {
	case errors.Is(err, errStaleSpare):
		return nil, nil // gc or a reconcile took it: use the slow path
	case err != nil:
		sp.giveBack(d)
		return nil, err
	}
	sp.s.distrustStampIfTroubled(ctx, rec)
	return rec, nil
}

var errStaleSpare = fmt.Errorf("spare no longer available: %w", errdefs.ErrConflict)

func (sp *spares) giveBack(d *metadata.Device) {
	sp.mu.Lock()
	sp.ready = append(sp.ready, d)
	sp.mu.Unlock()
}

// retireSpares deletes the spares this configuration will never hand
// out: every one when spares are off, those of a template that is no
// longer the default (base_size or fs_type changed), and those beyond
// target. load only picks up the default template's, so without this the
// others stayed active, holding a device and pool space, forever. It runs
// in New, before anything can claim a spare; a spare that cannot be
// deleted is left in state deleting, for gc.
func (s *Snapshotter) retireSpares(ctx context.Context, target int) {
	var def uint32
	if tp, err := s.lookupTemplate(templateName(s.cfg.FSType, s.cfg.BaseSize)); err == nil {
		def = tp.DeviceID
	}
	var stale []*metadata.Device
	kept := 0
	s.store.View(func(tx *metadata.Tx) error {
		return tx.Devices(func(_ uint32, d *metadata.Device, err error) error {
			if err != nil || d.Role != metadata.RoleSpare || d.State != metadata.DeviceReady {
				return nil
			}
			if def != 0 && d.Origin == def && kept < target {
				kept++
				return nil
			}
			stale = append(stale, d)
			return nil
		})
	})
	for _, d := range stale {
		ctx := s.withDevice(ctx, d.ID)
		if err := s.CollectDevice(ctx, d.ID, metadata.DeviceReady); err != nil {
			log.G(ctx).WithError(err).Warnf("could not retire spare device %s (template %q is not the default or spares are fewer); gc will", d.Name, d.Owner)
			continue
		}
		log.G(ctx).Infof("retired spare device %s of template %q: not the default template, or more spares than spare_devices", d.Name, d.Owner)
	}
}
