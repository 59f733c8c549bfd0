package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMissingDefaultFileMeansDefaults(t *testing.T) {
	cfg, err := Load(filepath.Join(t.TempDir(), "absent.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pool.BlockSize != 128<<10 || cfg.Pool.Name != "flyio-pool" || cfg.Pool.DataFile != "/var/lib/flyio-image-manager/pool/data" {
		t.Fatalf("defaults: %+v", cfg.Pool)
	}
	absent := filepath.Join(t.TempDir(), "absent.toml")
	if _, err := Load(absent, true); err == nil || !strings.Contains(err.Error(), "config file "+absent+" (named by --config) does not exist") {
		t.Fatalf("an explicitly named missing file must be an error naming it: %v", err)
	}
}

func TestLoadSizesAndValidation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte(`root_dir = "/srv/fim"
[pool]
data_size = "2GiB"
block_size = 262144
[snapshotter]
base_size = "1GB"
`), 0o644)
	cfg, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pool.DataSize != 2<<30 || cfg.Pool.BlockSize != 256<<10 || cfg.Snapshotter.BaseSize != 1<<30 || cfg.Pool.MetadataFile != "/srv/fim/pool/metadata" {
		t.Fatalf("loaded %+v", cfg)
	}
	os.WriteFile(path, []byte("[pool]\nblock_size = \"100KiB\"\n"), 0o644)
	if _, err := Load(path, true); err == nil || !strings.Contains(err.Error(), "pool.block_size") {
		t.Fatalf("bad block size: %v", err)
	}
	for _, bad := range []string{"0", "101", "-5"} {
		os.WriteFile(path, []byte("[pool]\nfull_threshold = "+bad+"\n"), 0o644)
		if _, err := Load(path, true); err == nil || !strings.Contains(err.Error(), "pool.full_threshold") {
			t.Fatalf("full_threshold = %s: %v", bad, err)
		}
	}
	os.WriteFile(path, []byte("[pool]\nfull_threshold = 75\n"), 0o644)
	if cfg, err := Load(path, true); err != nil || cfg.Pool.FullThreshold != 75 {
		t.Fatalf("full_threshold = 75: %+v, %v", cfg.Pool, err)
	}
	os.WriteFile(path, []byte("[pool]\nblok_size = 1\n"), 0o644)
	if _, err := Load(path, true); err == nil || !strings.Contains(err.Error(), "blok_size") {
		t.Fatalf("unknown key must be named: %v", err)
	}
}

func TestExampleFileMatchesDefaults(t *testing.T) {
	cfg, err := Load("../config.toml.example", true)
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	def.fill()
	if cfg.RootDir != def.RootDir || cfg.Pool != def.Pool || cfg.Snapshotter != def.Snapshotter || cfg.Address != def.Address ||
		cfg.AdminAddress != def.AdminAddress || cfg.S3 != def.S3 || cfg.Containerd != def.Containerd || cfg.Extract != def.Extract {
		t.Fatalf("config.toml.example drifted from the defaults:\n got %+v\nwant %+v", cfg, def)
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("DOWNLOAD_TIMEOUT", "600")
	t.Setenv("DOWNLOAD_QUEUE_SIZE", "10")
	t.Setenv("UNPACK_TIMEOUT", "3600")
	cfg, err := Load(filepath.Join(t.TempDir(), "absent.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.S3.DownloadTimeout != 600 || cfg.S3.DownloadQueueSize != 10 || cfg.Extract.UnpackTimeout != 3600 {
		t.Fatalf("env not applied: s3 %+v extract %+v", cfg.S3, cfg.Extract)
	}
	t.Setenv("UNPACK_TIMEOUT", "soon")
	if _, err := Load(filepath.Join(t.TempDir(), "absent.toml"), false); err == nil || !strings.Contains(err.Error(), "UNPACK_TIMEOUT") {
		t.Fatalf("bad UNPACK_TIMEOUT: %v", err)
	}
}

func TestLogSettingsValidated(t *testing.T) {
	for _, c := range []struct{ toml, want string }{
		{`log_level = "verbose"`, `log_level "verbose"`},
		{`log_format = "xml"`, `log_format "xml"`},
	} {
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte(c.toml+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path, true)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error naming %s", c.toml, err, c.want)
		}
	}
}

// TestTenantSafeDefaults: new blocks are zeroed unless the file says
// otherwise (a guest owning a raw device must not read deleted data), and
// discards stay opt-in as in containerd's devmapper.
func TestTenantSafeDefaults(t *testing.T) {
	def := Default()
	if !def.Pool.CheckOnStart {
		t.Fatalf("defaults: check_on_start off")
	}
	if !def.Pool.ZeroNewBlocks || def.Snapshotter.DiscardBlocks {
		t.Fatalf("defaults: zero_new_blocks %v, discard_blocks %v", def.Pool.ZeroNewBlocks, def.Snapshotter.DiscardBlocks)
	}
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte("[pool]\nzero_new_blocks = false\n[snapshotter]\ndiscard_blocks = true\n"), 0o644)
	cfg, err := Load(path, true)
	if err != nil || cfg.Pool.ZeroNewBlocks || !cfg.Snapshotter.DiscardBlocks {
		t.Fatalf("loaded zero_new_blocks %v, discard_blocks %v, %v", cfg.Pool.ZeroNewBlocks, cfg.Snapshotter.DiscardBlocks, err)
	}
}

// TestSizesAndDurationsTakeUnits: every size key takes units and every
// duration key takes seconds or a duration, from one codec.
func TestSizesAndDurationsTakeUnits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte(`[s3]
part_size = "8MiB"
download_timeout = "5m"
part_timeout = 0.5
retry_max_delay = "2s"
[extract]
max_file_size = "1PiB"
max_total_size = "2PiB"
unpack_timeout = "1h"
`), 0o644)
	cfg, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.S3.PartSize != 8<<20 || cfg.S3.DownloadTimeout != 300 || cfg.S3.PartTimeout != 0.5 || cfg.S3.RetryMaxDelay != 2 ||
		cfg.Extract.MaxFileSize != 1<<50 || cfg.Extract.MaxTotalSize != 2<<50 || cfg.Extract.UnpackTimeout != 3600 {
		t.Fatalf("loaded s3 %+v extract %+v", cfg.S3, cfg.Extract)
	}
	t.Setenv("UNPACK_TIMEOUT", "45m")
	t.Setenv("DOWNLOAD_TIMEOUT", "10m")
	if cfg, err = Load(path, true); err != nil || cfg.Extract.UnpackTimeout != 2700 || cfg.S3.DownloadTimeout != 600 {
		t.Fatalf("env durations: %v %v, %v", cfg.Extract.UnpackTimeout, cfg.S3.DownloadTimeout, err)
	}
}

// TestConfigMessagesNameKeyNotGoType: a value of the wrong kind or out of
// range is named by its key and what it wants; no Go type ever shows.
func TestConfigMessagesNameKeyNotGoType(t *testing.T) {
	for _, c := range []struct{ toml, want string }{
		{"[pool]\ndata_size = \"99999999999TiB\"\n", `[pool] data_size = "99999999999TiB": invalid size "99999999999TiB": too large, the most is 8EiB`},
		{"[pool]\ndata_size = -5\n", "[pool] data_size = -5: want a size"},
		{"[pool]\ndata_size = true\n", "[pool] data_size = true: want a size"},
		{"[extract]\nmax_file_size = \"1XB\"\n", `[extract] max_file_size = "1XB": invalid size "1XB": unknown unit "XB"`},
		// Not a whole number of bytes: refused, never truncated.
		{"[extract]\nmax_file_size = \"1.1KiB\"\n", `[extract] max_file_size = "1.1KiB": invalid size "1.1KiB": not a whole number of bytes (1126.4)`},
		{"[snapshotter]\nbase_size = \"0.1GiB\"\n", `[snapshotter] base_size = "0.1GiB": invalid size "0.1GiB": not a whole number of bytes (107374182.4)`},
		{"[extract]\nmax_file_size = 1.5\n", "[extract] max_file_size = 1.5: want a size, e.g. 512, \"128KiB\", \"20GiB\", got a fractional number"},
		{"[s3]\ndownload_timeout = \"soon\"\n", `[s3] download_timeout = "soon": invalid duration "soon": want a number of seconds or a duration`},
		{"[s3]\ndownload_timeout = true\n", "[s3] download_timeout = true: want a number of seconds or a duration"},
		{"[s3]\nconcurrency = \"4\"\n", `[s3] concurrency = "4": want a whole number, got a string`},
		{"[s3]\nbucket = 5\n", "[s3] bucket = 5: want a string (in quotes), got an integer"},
		{"[s3]\npath_style = \"yes\"\n", `[s3] path_style = "yes": want true or false, got a string`},
		{"[pool]\nlow_water_mark = -1\n", "[pool] low_water_mark = -1: want a whole number that is not negative"},
		{"[pool]\nfull_threshold = 1.5\n", "[pool] full_threshold = 1.5: want a whole number, got a fractional number"},
		{"log_level = 3\n", "log_level = 3: want a string"},
		{"pool = 3\n", "pool must be a table ([pool]), got an integer"},
		{"[extract]\nunpack_timeout = \"-1m\"\n", `[extract] unpack_timeout = "-1m": invalid duration "-1m": negative`},
		// TOML's nan would become a NaN time.Duration: a negative one on amd64.
		{"[s3]\ndownload_timeout = nan\n", "[s3] download_timeout = NaN: want a duration, got nan"},
		{"[s3]\ndownload_timeout = -nan\n", "[s3] download_timeout = NaN: want a duration, got nan"},
	} {
		path := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(path, []byte(c.toml), 0o644)
		_, err := Load(path, true)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.toml, err, c.want)
			continue
		}
		for _, goName := range []string{"int64", "uint64", "float64", "struct field", "units.", "s3fetch.", "config.", "Seconds", "Size"} {
			if strings.Contains(err.Error(), goName) {
				t.Errorf("%q: %v names Go's %q", c.toml, err, goName)
			}
		}
	}
}

// TestLayerStoreNeedsBucket: with no default bucket, turning the layer
// store on without one is refused at load, naming the key to set.
func TestLayerStoreNeedsBucket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte("[s3]\nlayer_prefix = \"layers/\"\n"), 0o644)
	if _, err := Load(path, true); err == nil || !strings.Contains(err.Error(), "set [s3] bucket") {
		t.Fatalf("layer_prefix without bucket: %v", err)
	}
	if cfg, err := Load(filepath.Join(t.TempDir(), "absent.toml"), false); err != nil || cfg.S3.Bucket != "" {
		t.Fatalf("defaults: bucket %q, %v; want none and no error", cfg.S3.Bucket, err)
	}
}

// TestBlockPrefixNeedsBucket: block_prefix is checked like layer_prefix.
func TestBlockPrefixNeedsBucket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte("[s3]\nblock_prefix = \"blocks/\"\n"), 0o644)
	if _, err := Load(path, true); err == nil || !strings.Contains(err.Error(), "block_prefix") || !strings.Contains(err.Error(), "set [s3] bucket") {
		t.Fatalf("block_prefix without bucket: %v", err)
	}
	os.WriteFile(path, []byte("[s3]\nbucket = \"b\"\nblock_prefix = \"blocks/\"\n"), 0o644)
	if cfg, err := Load(path, true); err != nil || cfg.S3.BlockPrefix != "blocks/" {
		t.Fatalf("block_prefix %q, %v", cfg.S3.BlockPrefix, err)
	}
}
