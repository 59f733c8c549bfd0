package admin

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// snakeKey is a JSON key of the admin API: lower-case snake_case.
var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// TestWireKeysSnakeCase walks every wire type's JSON keys: the API and
// the --json output are snake_case throughout (status --json once
// printed the pool's status as UsedDataBlocks beside snake_case keys).
func TestWireKeysSnakeCase(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(path string, rt reflect.Type)
	walk = func(path string, rt reflect.Type) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice || rt.Kind() == reflect.Map {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || seen[rt] || rt.PkgPath() == "time" {
			return
		}
		seen[rt] = true
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				t.Errorf("%s.%s has no json key", path, f.Name)
			} else if !snakeKey.MatchString(name) {
				t.Errorf("%s.%s: json key %q is not snake_case", path, f.Name, name)
			}
			walk(path+"."+name, f.Type)
		}
	}
	for _, v := range []any{Status{}, Run{}, ProcessImageRequest{}, QueueInfo{}, GCRequest{}, GCReport{},
		DeleteImageResult{}, ImageInfo{}, SnapshotTree{}, DiagFile{}, errorBody{},
		AcceptLostWritesRequest{}, AcceptLostWritesResult{}} {
		walk(reflect.TypeOf(v).Name(), reflect.TypeOf(v))
	}
}

func TestStatusPoolKeys(t *testing.T) {
	b, err := json.Marshal(Status{PoolState: PoolStatus{UsedDataBlocks: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"pool_status":{"transaction_id":0,"used_meta_blocks":0,"total_meta_blocks":0,"used_data_blocks":3,`) {
		t.Errorf("status JSON: %s", b)
	}
}

// TestRunError moved here from importer with RunError: a client that
// waited on a run turns its end into an error of the right kind.
func TestRunError(t *testing.T) {
	if err := RunError(Run{ID: "r1", State: RunCancelled, Error: "cancelled by the operator while queued"}); !errdefs.IsAborted(err) || !strings.Contains(err.Error(), "r1") {
		t.Errorf("RunError of a cancelled run: %v", err)
	}
	if err := RunError(Run{ID: "r2", State: RunFailed, Error: "boom"}); !errors.Is(err, errRunFailed) || !errdefs.IsUnknown(err) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("RunError of a failed run: %v", err)
	}
	// No errdefs kind at the end: "... pool has failed: unknown" read as
	// if the cause were unknown.
	for _, st := range []RunState{RunCancelled, RunFailed} {
		if err := RunError(Run{ID: "r4", State: st, Error: "the pool has failed"}); strings.HasSuffix(err.Error(), ": unknown") || strings.HasSuffix(err.Error(), ": aborted") {
			t.Errorf("RunError of a %s run prints its kind: %v", st, err)
		}
	}
	if err := RunError(Run{ID: "r3", State: RunDone}); err != nil {
		t.Errorf("RunError of a done run: %v", err)
	}
}

// A status from a daemon of the previous release (CamelCase pool keys)
// decodes with its counters, not as an empty pool.
func TestPoolStatusReadsThePreviousReleasesKeys(t *testing.T) {
	old := []byte(`{"TransactionID":7,"UsedMetaBlocks":10,"TotalMetaBlocks":100,"UsedDataBlocks":950,"TotalDataBlocks":1000,"DataBlockSize":131072,"ReadOnly":false,"OutOfDataSpace":true,"NeedsCheck":false,"ErrorIfNoSpace":true,"Fail":false,"HeldMetadataRoot":"-","EventNr":3}`)
	var p PoolStatus
	if err := json.Unmarshal(old, &p); err != nil {
		t.Fatal(err)
	}
	want := PoolStatus{TransactionID: 7, UsedMetaBlocks: 10, TotalMetaBlocks: 100, UsedDataBlocks: 950, TotalDataBlocks: 1000,
		DataBlockSize: 131072, OutOfDataSpace: true, ErrorIfNoSpace: true, HeldMetadataRoot: "-", EventNr: 3}
	if p != want {
		t.Errorf("previous release's status decoded as %+v, want %+v", p, want)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back PoolStatus
	if err := json.Unmarshal(b, &back); err != nil || back != p {
		t.Errorf("round trip: %+v, %v; want %+v", back, err, p)
	}
}
