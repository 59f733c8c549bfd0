package adminwire

import (
	"reflect"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/diag"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/importer"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

var seen = map[reflect.Type]bool{}

// fill sets every exported field of v (a pointer) to a non-zero value,
// one level into slices, so a conversion that forgets a field shows as
// a zero field on the other side.
func fill(v reflect.Value) {
	switch {
	case v.Kind() == reflect.Pointer && seen[v.Type()]:
		return
	case v.Kind() == reflect.Pointer:
		seen[v.Type()] = true
		defer delete(seen, v.Type())
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte("x"))
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		if !seen[v.Type()] { // a recursive type (a node's children) once
			seen[v.Type()] = true
			fill(s.Index(0))
			delete(seen, v.Type())
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		m.SetMapIndex(reflect.ValueOf("k").Convert(v.Type().Key()), reflect.ValueOf("v").Convert(v.Type().Elem()))
		v.Set(m)
	case reflect.String:
		v.SetString("s")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(7)
	}
}

// zeroFields names the exported fields of v (a struct) left zero.
func zeroFields(t *testing.T, what string, v any) {
	t.Helper()
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	for i := 0; i < rv.NumField(); i++ {
		f := rv.Type().Field(i)
		if f.IsExported() && rv.Field(i).IsZero() {
			t.Errorf("%s.%s is not converted", what, f.Name)
		}
	}
}

func filled[T any]() T {
	var v T
	fill(reflect.ValueOf(&v).Elem())
	return v
}

// TestWireConversionsComplete proves every wire field is filled from its
// domain type: a field added to one side and not the other is caught here
// rather than going missing from the API.
func TestWireConversionsComplete(t *testing.T) {
	zeroFields(t, "admin.Run", Run(filled[metadata.Run]()))
	zeroFields(t, "admin.Image", Image(filled[metadata.Image]()))
	zeroFields(t, "admin.PoolStatus", PoolStatus(filled[dmpool.Status]()))
	zeroFields(t, "importer.Request", ImportRequest(filled[admin.ProcessImageRequest]()))
	qs := Queues([]importer.QueueInfo{filled[importer.QueueInfo]()})
	zeroFields(t, "admin.QueueInfo", qs[0])
	zeroFields(t, "admin.QueuedRun", qs[0].Runs[0])
	rep := filled[gc.Report]()
	w := GCReport(&rep)
	zeroFields(t, "admin.GCReport", w)
	zeroFields(t, "admin.GCItem", w.Items[0])
	zeroFields(t, "admin.DiagFile", DiagFiles([]diag.File{filled[diag.File]()})[0])
	zeroFields(t, "admin.ImageInfo", Images([]gc.ImageInfo{filled[gc.ImageInfo]()})[0])
	zeroFields(t, "admin.DeleteImageResult", DeletedImage(filled[importer.DeletedImage]()))
	tree := filled[gc.SnapshotTree]()
	tree.Roots[0].Children = []*gc.SnapshotNode{{Key: "child"}}
	wt := SnapshotTree(tree)
	zeroFields(t, "admin.SnapshotTree", wt)
	zeroFields(t, "admin.SnapshotNode", wt.Roots[0])
	zeroFields(t, "admin.DeviceInfo", wt.Devices[0])
}

// TestWireBackComplete: what comes back from the wire into the domain
// (gc's table, diag's bundle, a gc request) loses no field either.
func TestWireBackComplete(t *testing.T) {
	w := filled[admin.GCReport]()
	w.MinAge = "5m0s"
	if got := GCReport(DomainGCReport(w)); !reflect.DeepEqual(got, w) {
		t.Errorf("a gc report through the domain and back:\n got %+v\nwant %+v", got, w)
	}
	fs := []admin.DiagFile{filled[admin.DiagFile]()}
	if got := DiagFiles(DomainDiagFiles(fs)); !reflect.DeepEqual(got, fs) {
		t.Errorf("diag files through the domain and back: %+v, want %+v", got, fs)
	}
	opts, err := GCOptions(admin.GCRequest{MinAge: "0s", IncludeQuarantined: true})
	if err != nil || opts.MinAge != -1 || !opts.IncludeQuarantined {
		t.Errorf("GCOptions(0s, quarantined) = %+v, %v; want no min age, quarantined", opts, err)
	}
	if _, err := GCOptions(admin.GCRequest{MinAge: "soon"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("GCOptions(soon): %v, want invalid argument", err)
	}
}

// TestTroubleWireConversionsComplete is TestWireConversionsComplete for
// the trouble types.
func TestTroubleWireConversionsComplete(t *testing.T) {
	zeroFields(t, "admin.PoolTrouble", PoolTrouble(filled[metadata.PoolTrouble](), 1))
	zeroFields(t, "admin.AcceptLostWritesResult", LostWritesAccepted(filled[snapshotter.LostWritesAccepted]()))
}
