package logring

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestRingKeepsNewest(t *testing.T) {
	r := New(3)
	if got := r.Lines(); len(got) != 0 {
		t.Fatalf("empty ring has %q", got)
	}
	for i := 1; i <= 5; i++ {
		r.Add(fmt.Sprint(i))
	}
	if got := strings.Join(r.Lines(), ","); got != "3,4,5" {
		t.Errorf("lines = %s, want 3,4,5", got)
	}
}

func TestHookFormatsText(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetFormatter(&logrus.JSONFormatter{})
	r := New(10)
	l.AddHook(r)
	l.WithField("key", "default/1/x").Info("prepared")
	l.Debug("not enabled")
	got := r.Lines()
	if len(got) != 1 {
		t.Fatalf("lines = %q, want one", got)
	}
	for _, want := range []string{"level=info", `msg=prepared`, "key=default/1/x", "time="} {
		if !strings.Contains(got[0], want) {
			t.Errorf("line %q lacks %q", got[0], want)
		}
	}
}
