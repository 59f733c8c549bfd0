package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/internal/defaults"
)

// DefaultRemoteFillWait is how long a Prepare waits for a remote fill
// when Config.RemoteFillWait is not set ([snapshotter] remote_fill_wait).
const DefaultRemoteFillWait = defaults.RemoteFillWaitSeconds * time.Second

// errFillPending is fillRemote's answer when the fill outlasted the wait:
// it goes on in the background and the Prepare falls back to an ordinary
// snapshot.
var errFillPending = errors.New("remote fill still running")

// remoteFill is one fill of a committed snapshot remoteName(ref) from the
// remote layer store, shared by every Prepare of that layer while it runs.
//
// Why it runs apart from its Prepare: containerd's metadata snapshotter
// calls our Prepare holding its snapshotter lock for reading, and its
// garbage collection takes that lock for writing. Go's RWMutex queues new
// readers behind a waiting writer, so once a GC waits for the lock every
// other Prepare, Commit and Remove of the node (another image's `ctr run`
// included) waits until our Prepare returns. A fill of a big layer from a
// slow S3 can take minutes. So a Prepare waits for the fill at most
// remote_fill_wait; if the fill is done by then it answers
// ErrAlreadyExists (containerd adopts the committed snapshot through its
// ref label), otherwise it makes an ordinary empty snapshot and containerd
// fetches and applies this layer itself (its unpacker fails the whole
// pull on any other error, and retries ErrAlreadyExists only three times
// at once). The fill goes on: a later Prepare of the layer (a re-pull,
// another namespace) joins it or finds it committed, so the layer is
// fetched from S3 once. A half-filled layer is never committed: only
// fillOnce commits, after a complete, verified extraction.
//
// Cancellation: while no waiter has given up on its deadline, the fill
// is the waiters' alone and is cancelled when the last of them goes away
// (a cancelled unpack); once one has timed out the fill is for later
// Prepares and runs to its end. Close cancels every fill.
type remoteFill struct {
	done     chan struct{} // closed when err is set
	err      error
	waiting  int  // Prepares waiting now; under fillsMu
	detached bool // a waiter timed out: the fill outlives its waiters
	cancel   context.CancelFunc
	parent   string // the parent the fill commits its layer on
}

// testHookFillWaitEnded, when set by a test, runs after a Prepare's wait
// for a fill ended and before it takes fillsMu.
var testHookFillWaitEnded func()

// fillSnapshotInFlight reports whether key is the fill snapshot
// ("remote-fill/<ref>/<suffix>") of a fill that is still running. One a
// crash left behind is not: containerd's GC and gc remove it.
func (s *Snapshotter) fillSnapshotInFlight(key string) bool {
	rest, ok := strings.CutPrefix(key, "remote-fill/")
	if !ok {
		return false
	}
	i := strings.LastIndex(rest, "/")
	if i < 0 {
		return false
	}
	s.fillsMu.Lock()
	defer s.fillsMu.Unlock()
	_, running := s.fills[remoteName(rest[:i])]
	return running
}

// fillRemote makes sure the committed snapshot containerd's unpacker is
// about to extract is being filled from the remote store, and waits for it
// at most Config.RemoteFillWait. It returns nil when the committed
// snapshot exists (the caller answers ErrAlreadyExists), errFillPending
// when the fill goes on in the background, errNotRemote when the store
// has no such layer, and another error when the fill failed; in the last
// three cases the ordinary Prepare goes on.
func (s *Snapshotter) fillRemote(ctx context.Context, parent string, labels map[string]string) error {
	ref := labels[snapshots.LabelSnapshotRef]
	ctx = withFields(ctx, log.Fields{fieldRef: ref})
	name := remoteName(ref)
	s.fillsMu.Lock()
	f, joined := s.fills[name]
	if joined && f.parent != parent {
		// The running fill commits the layer on another parent (another
		// namespace's chain): its result is not what containerd looks for
		// after ErrAlreadyExists (ref and this parent), so joining it
		// would fail this pull. This Prepare unpacks as usual.
		s.fillsMu.Unlock()
		return fmt.Errorf("%w: a fill of this layer on parent %q is running, not on %q", errFillPending, f.parent, parent)
	}
	if !joined {
		fctx, cancel := context.WithCancel(log.WithLogger(s.closing, log.G(ctx)))
		f = &remoteFill{done: make(chan struct{}), cancel: cancel, parent: parent}
		s.fills[name] = f
		started := s.goBackground(func() {
			defer cancel()
			made, err := s.fillOnce(fctx, parent, labels)
			s.fillsMu.Lock()
			delete(s.fills, name)
			f.err = err
			close(f.done)
			detached := f.detached
			if detached && made {
				// Under the same lock that ends the fill, so that no
				// walk sees the layer between the two (unadopted.go).
				s.unadopted[name] = time.Now()
			}
			s.fillsMu.Unlock()
			if detached {
				logDetachedFill(fctx, name, made, err)
			}
		})
		if !started {
			delete(s.fills, name)
			s.fillsMu.Unlock()
			cancel()
			return fmt.Errorf("remote fill of %s: the snapshotter is closing: %w", ref, errdefs.ErrUnavailable)
		}
	} else {
		log.G(ctx).Debug("joining the remote fill of this layer already running")
	}
	f.waiting++
	s.fillsMu.Unlock()

	timer := time.NewTimer(s.cfg.RemoteFillWait)
	defer timer.Stop()
	var err error
	timedOut := false
	select {
	case <-f.done:
		err = f.err
	case <-timer.C:
		timedOut = true
		err = fmt.Errorf("%w after %s", errFillPending, s.cfg.RemoteFillWait)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if testHookFillWaitEnded != nil {
		testHookFillWaitEnded()
	}
	s.fillsMu.Lock()
	f.waiting--
	if timedOut {
		select {
		case <-f.done:
			// It ended between the timer and this lock: its result is
			// this Prepare's (the goroutine saw no detached waiter and
			// logs nothing).
			timedOut, err = false, f.err
		default:
			f.detached = true
		}
	}
	if f.waiting == 0 && !f.detached && ctx.Err() != nil {
		f.cancel()
	}
	s.fillsMu.Unlock()
	return err
}

// logDetachedFill reports the end of a fill whose Prepares stopped
// waiting for it: nobody else sees its result. nil means remoteName(ref)
// is committed now (by this fill, or found committed). A layer this fill
// committed is kept for the next Prepare of it (a re-pull, another
// namespace) to adopt, hidden from containerd's garbage collection for
// unadoptedKeep (unadopted.go).
func logDetachedFill(ctx context.Context, name string, made bool, err error) {
	switch {
	case err == nil && !made:
		log.G(ctx).Infof("layer %q was committed already when its background fill began", name)
	case err == nil:
		log.G(ctx).Infof("layer filled from the remote store in the background as %q; kept for %s for a later pull to adopt", name, unadoptedKeep)
	case ctx.Err() != nil:
		log.G(ctx).WithError(err).Infof("background fill %q stopped: the daemon is closing", name)
	case errors.Is(err, errNotRemote):
		log.G(ctx).Infof("background fill %q: the remote store does not have this layer", name)
	default:
		log.G(ctx).WithError(err).Warnf("background fill %q from the remote store failed; the next pull of this layer tries again", name)
	}
}
