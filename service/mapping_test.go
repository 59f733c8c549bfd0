package service

import (
	"reflect"
	"testing"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// The [s3] defaults are written once (internal/defaults): what config
// gives an operator without a key is what s3fetch falls back on.
func TestS3DefaultsAgree(t *testing.T) {
	if got, want := S3Config(config.Default()), s3fetch.DefaultConfig(); got != want {
		t.Fatalf("S3Config(config.Default()) = %+v\ns3fetch.DefaultConfig() = %+v", got, want)
	}
}

// setDistinct sets every field of the struct v points to a value that
// differs from the zero value and from the other fields'.
func setDistinct(t *testing.T, v reflect.Value) {
	t.Helper()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("s" + v.Type().Field(i).Name)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(100 + i))
		case reflect.Float64:
			f.SetFloat(float64(100+i) + 0.5)
		default:
			t.Fatalf("field %s: kind %s not handled", v.Type().Field(i).Name, f.Kind())
		}
	}
}

// Every [s3] key reaches s3fetch: a key added to one side and not mapped
// would be silently ignored.
func TestS3ConfigMapsEveryField(t *testing.T) {
	var cfg config.Config
	setDistinct(t, reflect.ValueOf(&cfg.S3).Elem())
	got := reflect.ValueOf(S3Config(cfg))
	src := reflect.ValueOf(cfg.S3)
	if got.NumField() != src.NumField() {
		t.Fatalf("s3fetch.Config has %d fields, config.S3 %d", got.NumField(), src.NumField())
	}
	for i := 0; i < src.NumField(); i++ {
		name := src.Type().Field(i).Name
		g := got.FieldByName(name)
		if !g.IsValid() {
			t.Errorf("config.S3.%s has no s3fetch.Config field", name)
			continue
		}
		if g.Interface() != reflect.ValueOf(src.Field(i).Interface()).Convert(g.Type()).Interface() {
			t.Errorf("%s: mapped %v, want %v", name, g.Interface(), src.Field(i).Interface())
		}
	}
}

func TestExtractOptions(t *testing.T) {
	cfg := config.Default()
	cfg.Extract.StrictSymlinks, cfg.Extract.AllowDevices = true, true
	o := ExtractOptions(cfg)
	if o.MaxFileSize != int64(cfg.Extract.MaxFileSize) || o.MaxTotalSize != int64(cfg.Extract.MaxTotalSize) ||
		o.MaxEntries != cfg.Extract.MaxEntries || !o.StrictSymlinks || !o.AllowDevices {
		t.Fatalf("ExtractOptions = %+v from %+v", o, cfg.Extract)
	}
}

// Offline gc gets the daemon's snapshotter settings: the same base size,
// filesystem, discard, limits and mount directory (before service, gc.go
// built its own with only three of them), and leaves spares to the daemon.
func TestOfflineSnapshotterConfigIsTheDaemons(t *testing.T) {
	cfg := config.Default()
	cfg.Snapshotter.BaseSize = 1 << 30
	cfg.Snapshotter.FSType = "xfs"
	cfg.Snapshotter.DiscardBlocks = true
	cfg.Snapshotter.SpareDevices = 3
	d := snapshotterConfig(cfg, Daemon, nil)
	o := snapshotterConfig(cfg, Offline, nil)
	if d.LeaveSpares || !o.LeaveSpares {
		t.Fatalf("LeaveSpares: daemon %v offline %v, want false and true", d.LeaveSpares, o.LeaveSpares)
	}
	o.LeaveSpares = false
	if !reflect.DeepEqual(d, o) {
		t.Fatalf("offline snapshotter config differs from the daemon's:\ndaemon  %+v\noffline %+v", d, o)
	}
	if d.BaseSize != 1<<30 || d.FSType != "xfs" || !d.DiscardBlocks || d.Spares != 3 || d.MountDir == "" ||
		d.RemoteFillWait != cfg.Snapshotter.RemoteFillWait.Duration() {
		t.Fatalf("snapshotter config %+v from %+v", d, cfg.Snapshotter)
	}
}
