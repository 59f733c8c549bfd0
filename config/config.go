// Package config loads the daemon's and the operator commands' TOML
// configuration. Every key has a default, so a missing default config file
// means "all defaults" and the daemon starts with zero configuration.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/superfly/flyio-image-manager/internal/defaults"
	"github.com/superfly/flyio-image-manager/internal/units"
)

// DefaultPath is where the daemon and the operator commands look for their
// configuration when --config is not given.
const DefaultPath = "/etc/flyio-image-manager/config.toml"

// Config is the whole configuration file.
type Config struct {
	// RootDir holds the metadata database and, for loopback pools, the
	// pool's data and metadata files.
	RootDir string `toml:"root_dir"`
	// Address is the unix socket serving containerd's snapshots gRPC API.
	Address string `toml:"address"`
	// AdminAddress is the unix socket operator commands talk to.
	AdminAddress string `toml:"admin_address"`
	// MetricsAddress is a TCP address ("127.0.0.1:9150") serving
	// Prometheus metrics on /metrics; empty disables it.
	MetricsAddress string `toml:"metrics_address"`
	// DebugAddress is a unix socket serving net/http/pprof under
	// /debug/pprof/; empty disables it.
	DebugAddress string `toml:"debug_address"`
	// LogLevel is the daemon's log level: trace, debug, info, warn, error.
	LogLevel string `toml:"log_level"`
	// LogFormat is "text" or "json".
	LogFormat string `toml:"log_format"`

	Pool        Pool        `toml:"pool"`
	Snapshotter Snapshotter `toml:"snapshotter"`
	S3          S3          `toml:"s3"`
	Containerd  Containerd  `toml:"containerd"`
	Extract     Extract     `toml:"extract"`
	Lazy        Lazy        `toml:"lazy"`
}

// Containerd says where the daemon registers the images process-image
// makes, and which containerd the gc asks about live snapshots.
type Containerd struct {
	Address   string `toml:"address"`
	Namespace string `toml:"namespace"`
	// Snapshotter is the name containerd knows this daemon by
	// ([proxy_plugins.<name>]).
	Snapshotter string `toml:"snapshotter"`
}

// Extract bounds what an image tarball may hold (service maps it onto
// extract.Options).
type Extract struct {
	MaxFileSize  Size `toml:"max_file_size"`
	MaxTotalSize Size `toml:"max_total_size"`
	MaxEntries   int  `toml:"max_entries"`
	// StrictSymlinks rejects symlinks whose target climbs out of the root.
	StrictSymlinks bool `toml:"strict_symlinks"`
	// AllowDevices creates device nodes instead of skipping them (FIFOs
	// are always created).
	AllowDevices bool `toml:"allow_devices"`
	// UnpackTimeout bounds one extraction: seconds, or a duration such as
	// "30m". Env UNPACK_TIMEOUT overrides it.
	UnpackTimeout Seconds `toml:"unpack_timeout"`
	// UnpackQueueSize bounds how many process-image runs download and
	// extract at once; more wait in the unpacks queue. Env
	// UNPACK_QUEUE_SIZE overrides it.
	UnpackQueueSize int `toml:"unpack_queue_size"`
}

// Pool configures the dm-thin pool.
type Pool struct {
	Name string `toml:"name"`
	// DataDevice and MetadataDevice name real block devices. When both are
	// empty the pool lives on loopback files under RootDir.
	DataDevice     string `toml:"data_device"`
	MetadataDevice string `toml:"metadata_device"`
	DataFile       string `toml:"data_file"`
	MetadataFile   string `toml:"metadata_file"`
	DataSize       Size   `toml:"data_size"`
	MetadataSize   Size   `toml:"metadata_size"`
	// BlockSize is the thin-pool allocation unit. 128KiB, not 1MiB: large
	// blocks make every first write to a snapshot copy a whole megabyte.
	BlockSize Size `toml:"block_size"`
	// LowWaterMark is in data blocks; the kernel raises an event below it.
	LowWaterMark uint64 `toml:"low_water_mark"`
	// FullThreshold is the data or metadata usage, in percent, at which
	// new snapshots and imports are refused ("devicemapper pool is full")
	// instead of letting writers run the pool out of space.
	FullThreshold int `toml:"full_threshold"`
	// ZeroNewBlocks makes dm-thin zero a newly provisioned block before a
	// partial write, so no device (or microVM guest) reads what a deleted
	// device left there. Applied to an existing pool at start.
	ZeroNewBlocks bool `toml:"zero_new_blocks"`
	// CheckOnStart lets a start that finds the pool read-only with
	// needs_check, or failed, check and re-load it itself when no thin
	// device of it is open (docs/OPERATIONS.md).
	CheckOnStart bool `toml:"check_on_start"`
}

// Snapshotter configures how snapshots map onto thin devices.
type Snapshotter struct {
	// BaseSize is the filesystem size of a parentless snapshot unless the
	// containerd.io/snapshot/max-size label asks for another.
	BaseSize Size `toml:"base_size"`
	// FSType is "ext4" or "xfs".
	FSType string `toml:"fs_type"`
	// MountType is "fs". "block" is retired and means the same: every
	// mount is the ext4/xfs filesystem of the thin device, whose Source a
	// microVM runtime attaches to the guest (docs/microvm.md).
	MountType string `toml:"mount_type"`
	// DiscardBlocks discards a snapshot's blocks before its device is
	// deleted, so a loop-backed pool's file shrinks and SSDs get TRIM.
	DiscardBlocks bool `toml:"discard_blocks"`
	// SpareDevices is how many activated, empty snapshots of the default
	// template are kept ready, so a parentless Prepare is one metadata
	// transaction. Each costs a few metadata blocks and no data blocks.
	SpareDevices int `toml:"spare_devices"`
	// RemoteFillWait is how long a Prepare waits for a layer being filled
	// from the S3 layer store before it hands containerd an ordinary
	// empty snapshot (containerd downloads that layer itself this time)
	// while the fill goes on in the background. containerd holds its
	// snapshotter lock during Prepare, and a garbage collection waiting
	// for it stops every other snapshot operation of the node meanwhile.
	RemoteFillWait Seconds `toml:"remote_fill_wait"`
}

// Default returns the configuration used when no file is present.
func Default() Config {
	return Config{
		RootDir:      "/var/lib/flyio-image-manager",
		Address:      "/run/flyio-image-manager/snapshotter.sock",
		AdminAddress: "/run/flyio-image-manager/admin.sock",
		LogLevel:     "info",
		LogFormat:    "text",
		Pool: Pool{
			Name:          "flyio-pool",
			DataSize:      20 << 30,
			MetadataSize:  1 << 30,
			BlockSize:     128 << 10,
			LowWaterMark:  32768,
			FullThreshold: 90,
			ZeroNewBlocks: true,
			CheckOnStart:  true,
		},
		Snapshotter: Snapshotter{
			BaseSize:       defaults.BaseSize,
			FSType:         "ext4",
			MountType:      "fs",
			SpareDevices:   2,
			RemoteFillWait: defaults.RemoteFillWaitSeconds,
		},
		S3:   defaultS3(),
		Lazy: defaultLazy(),
		Containerd: Containerd{
			Address:     "/run/containerd/containerd.sock",
			Namespace:   "default",
			Snapshotter: "flyio",
		},
		Extract: Extract{
			MaxFileSize:     1 << 30,
			MaxTotalSize:    64 << 30,
			MaxEntries:      1_000_000,
			UnpackTimeout:   defaults.UnpackTimeoutSeconds,
			UnpackQueueSize: 2,
		},
	}
}

// Load reads path over the defaults. A missing file is only an error when
// the caller named it explicitly (explicit=true): a missing default file
// means all defaults.
func Load(path string, explicit bool) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := decode(data, &cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
	case errors.Is(err, fs.ErrNotExist):
		return cfg, fmt.Errorf("config file %s (named by --config) does not exist; without --config, a missing %s means all defaults", path, DefaultPath)
	default:
		return cfg, fmt.Errorf("config: %w", err)
	}
	cfg.fill()
	if err := cfg.applyEnv(); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// applyEnv lets the environment variables operators already know from the
// predecessor tool override the file: DOWNLOAD_TIMEOUT, DOWNLOAD_QUEUE_SIZE
// (both in [s3]) and UNPACK_TIMEOUT ([extract]).
func (c *Config) applyEnv() error {
	if err := c.S3.applyEnv(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if v := os.Getenv("UNPACK_TIMEOUT"); v != "" {
		d, err := units.ParseSeconds(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("config: UNPACK_TIMEOUT=%q: want a positive number of seconds or a duration such as 30m", v)
		}
		c.Extract.UnpackTimeout = d
	}
	if v := os.Getenv("UNPACK_QUEUE_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("config: UNPACK_QUEUE_SIZE=%q: want a positive number of concurrent unpacks", v)
		}
		c.Extract.UnpackQueueSize = n
	}
	return nil
}

// decode rejects unknown keys: a misspelt key silently ignored would leave
// an operator running on a default they thought they had changed.
func decode(data []byte, cfg *Config) error {
	var doc map[string]any
	err := toml.Unmarshal(data, &doc)
	if err == nil {
		// Check every value's kind first, so a wrong one is named by its
		// key and the kind it wants, never by the Go type behind it.
		err = checkKinds(doc, reflect.TypeOf(*cfg), "")
		if err != nil {
			return err
		}
		d := toml.NewDecoder(bytes.NewReader(data))
		d.DisallowUnknownFields()
		err = d.Decode(cfg)
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		return fmt.Errorf("unknown key(s):\n%s", strict.String())
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("line %d column %d: %s", row, col, strings.TrimPrefix(de.Error(), "toml: "))
	}
	return err
}

// fill derives the values that depend on others.
func (c *Config) fill() {
	c.Lazy.fill(c.RootDir)
	if c.Pool.DataDevice == "" && c.Pool.MetadataDevice == "" {
		if c.Pool.DataFile == "" {
			c.Pool.DataFile = filepath.Join(c.RootDir, "pool", "data")
		}
		if c.Pool.MetadataFile == "" {
			c.Pool.MetadataFile = filepath.Join(c.RootDir, "pool", "metadata")
		}
	}
}

// Validate reports the first key whose value cannot work.
func (c *Config) Validate() error {
	switch {
	case c.RootDir == "" || !filepath.IsAbs(c.RootDir):
		return fmt.Errorf("config: root_dir must be an absolute path, got %q", c.RootDir)
	case c.Pool.Name == "" || strings.ContainsAny(c.Pool.Name, "/ \t\n"):
		return fmt.Errorf("config: pool.name %q is not a valid device-mapper name", c.Pool.Name)
	case (c.Pool.DataDevice == "") != (c.Pool.MetadataDevice == ""):
		return fmt.Errorf("config: pool.data_device and pool.metadata_device must be set together")
	case c.Pool.BlockSize < 64<<10 || c.Pool.BlockSize > 1<<30 || c.Pool.BlockSize%(64<<10) != 0:
		return fmt.Errorf("config: pool.block_size %s must be a multiple of 64KiB between 64KiB and 1GiB", c.Pool.BlockSize)
	case c.Pool.DataDevice == "" && c.Pool.DataSize < c.Pool.BlockSize:
		return fmt.Errorf("config: pool.data_size %s is smaller than one block", c.Pool.DataSize)
	case c.Pool.MetadataDevice == "" && c.Pool.MetadataSize < 2<<20:
		return fmt.Errorf("config: pool.metadata_size %s is below the 2MiB the kernel needs", c.Pool.MetadataSize)
	case c.Pool.FullThreshold < 1 || c.Pool.FullThreshold > 100:
		return fmt.Errorf("config: pool.full_threshold %d must be a percentage between 1 and 100", c.Pool.FullThreshold)
	case c.Snapshotter.FSType != "ext4" && c.Snapshotter.FSType != "xfs":
		return fmt.Errorf("config: snapshotter.fs_type %q: want ext4 or xfs", c.Snapshotter.FSType)
	case c.Snapshotter.MountType != "fs" && c.Snapshotter.MountType != "block":
		return fmt.Errorf("config: snapshotter.mount_type %q: want fs or block", c.Snapshotter.MountType)
	case c.Snapshotter.SpareDevices < 0 || c.Snapshotter.SpareDevices > 64:
		return fmt.Errorf("config: snapshotter.spare_devices %d: want 0..64", c.Snapshotter.SpareDevices)
	case c.Snapshotter.RemoteFillWait <= 0 || c.Snapshotter.RemoteFillWait > 600:
		return fmt.Errorf("config: snapshotter.remote_fill_wait %s: want more than 0 and at most 600 seconds", c.Snapshotter.RemoteFillWait)
	case c.Snapshotter.BaseSize < 16<<20:
		return fmt.Errorf("config: snapshotter.base_size %s is below 16MiB", c.Snapshotter.BaseSize)
	case c.Extract.UnpackTimeout <= 0:
		return fmt.Errorf("config: extract.unpack_timeout %s must be positive", c.Extract.UnpackTimeout)
	case c.Extract.UnpackQueueSize <= 0:
		return fmt.Errorf("config: extract.unpack_queue_size %d must be positive", c.Extract.UnpackQueueSize)
	case !slices.Contains([]string{"trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"}, c.LogLevel):
		return fmt.Errorf("config: log_level %q: want trace, debug, info, warn or error", c.LogLevel)
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("config: log_format %q: want text or json", c.LogFormat)
	case c.Containerd.Namespace == "" || c.Containerd.Snapshotter == "":
		return fmt.Errorf("config: containerd.namespace and containerd.snapshotter must not be empty")
	}
	if err := c.S3.validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := c.Lazy.validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// Size and Seconds are the configuration's size and duration types, from
// the one codec flags and output share (internal/units). A size key takes
// an integer (bytes) or a string with a unit ("128KiB", "20GiB"); a
// duration key takes a number of seconds or a string ("90s", "5m").
type (
	Size    = units.Size
	Seconds = units.Seconds
)
