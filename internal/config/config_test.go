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
	if _, err := Load(filepath.Join(t.TempDir(), "absent.toml"), true); err == nil {
		t.Fatal("an explicitly named missing file must be an error")
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
	cfg, err := Load("../../config.toml.example", true)
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
