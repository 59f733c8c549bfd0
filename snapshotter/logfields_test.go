package snapshotter

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// TestLogLinesCarrySnapshotAndDevice runs a lifecycle with a JSON logger
// at debug level and checks that each operation's lines parse as JSON and
// name the snapshot key, the parent and the thin device.
func TestLogLinesCarrySnapshotAndDevice(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.DebugLevel)
	l.SetFormatter(&logrus.JSONFormatter{})
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(l))

	s, _, _ := newTestSnapshotter(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "b", "base"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "b"); err != nil {
		t.Fatal(err)
	}

	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		lines = append(lines, m)
	}
	find := func(msg string, want map[string]any) {
		t.Helper()
		for _, m := range lines {
			if !strings.HasPrefix(m["msg"].(string), msg) {
				continue
			}
			for k, v := range want {
				if m[k] != v {
					t.Errorf("%q line has %s = %v, want %v: %v", msg, k, m[k], v, m)
				}
			}
			return
		}
		t.Errorf("no %q line in:\n%s", msg, buf.String())
	}
	// JSON numbers decode as float64. Device 1 is the template, 2 is "a".
	find("snapshot prepared", map[string]any{"kind": "active", "key": "a", "device_id": float64(2), "device": "fake-thin-2"})
	find("creating ext4 template", map[string]any{"key": "a", "device_id": float64(1), "template": "ext4-67108864"})
	find("snapshot committed", map[string]any{"key": "a", "name": "base", "device_id": float64(2)})
	find("snapshot removed", map[string]any{"key": "b", "device_id": float64(3), "device": "fake-thin-3"})
	for _, m := range lines {
		if m["key"] == "b" && m["parent"] != "base" && strings.Contains(m["msg"].(string), "prepared") {
			t.Errorf("Prepare of b logged without its parent: %v", m)
		}
	}
}
