package metadata

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this code reads and writes. A database
// written by a newer version is refused rather than misread.
const SchemaVersion = 1

// ErrLocked means another process holds the database open: another daemon
// on the same root_dir.
var ErrLocked = errors.New("database is locked")

// lockedError is ErrLocked for one database. It is also
// errdefs.ErrUnavailable (try again later) without printing that kind's
// name: the message used to end in a stray ": unavailable".
type lockedError struct{ path string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("%v: %s is held by another process (is another flyio-image-manager daemon running on this root_dir?)", ErrLocked, e.path)
}

func (e *lockedError) Is(target error) bool {
	return target == ErrLocked || target == errdefs.ErrUnavailable
}

var (
	bucketMeta      = []byte("meta")
	bucketSnapshots = []byte("snapshots")
	bucketChildren  = []byte("children")
	bucketDevices   = []byte("devices")
	bucketTemplates = []byte("templates")
	bucketOps       = []byte("ops")

	keySchema       = []byte("schema_version")
	keyNextDeviceID = []byte("next_device_id")
)

// Store is the open metadata database.
type Store struct {
	db   *bolt.DB
	path string
}

// Options tune Open.
type Options struct {
	// LockTimeout is how long to wait for another process to release the
	// database before failing with ErrLocked. Zero means one second.
	LockTimeout time.Duration
	// ReadOnly opens the database for inspection (status, gc --dry-run)
	// without taking the writer lock.
	ReadOnly bool
}

// Open opens or creates the database at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
	}
	db, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, path: path}
	if opts.ReadOnly {
		return s, s.checkSchema()
	}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// openBolt turns bbolt's failures into messages an operator can act on.
// bbolt panics on some corrupt files, so that is caught too.
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corruptError(path, fmt.Errorf("%v", r))
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, ReadOnly: opts.ReadOnly})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, &lockedError{path: path}
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrChecksum):
		return nil, corruptError(path, err)
	default:
		return nil, fmt.Errorf("metadata: open %s: %w", path, err)
	}
}

func corruptError(path string, cause error) error {
	return fmt.Errorf("metadata database %s is corrupt (%v); the daemon will not reset it. "+
		"Stop the daemon, move the file aside (mv %s %s.corrupt), then start the daemon and run "+
		"'flyio-image-manager gc --dry-run' to see the thin devices it no longer knows: %w",
		path, cause, path, path, errdefs.ErrDataLoss)
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketSnapshots, bucketChildren, bucketDevices, bucketTemplates, bucketOps, bucketRuns, bucketRunSources, bucketImages} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		if v == nil {
			return meta.Put(keySchema, u64(SchemaVersion))
		}
		return checkVersion(s.path, v)
	})
}

func (s *Store) checkSchema() error {
	return s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("metadata %s: not initialised: %w", s.path, errdefs.ErrNotFound)
		}
		return checkVersion(s.path, meta.Get(keySchema))
	})
}

func checkVersion(path string, v []byte) error {
	if len(v) != 8 {
		return corruptError(path, fmt.Errorf("schema version record is %d bytes", len(v)))
	}
	if got := fromU64(v); got > SchemaVersion {
		return fmt.Errorf("metadata %s has schema version %d, this binary understands %d: upgrade flyio-image-manager: %w",
			path, got, SchemaVersion, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Close releases the database and its lock.
func (s *Store) Close() error { return s.db.Close() }

// Update runs fn in a write transaction. Keep fn short: no device-mapper
// work inside.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// View runs fn in a read transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}
