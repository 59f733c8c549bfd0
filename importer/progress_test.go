package importer

import (
	"bytes"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

// reports collects what a readCounter reports.
type reports struct {
	mu  sync.Mutex
	got []int64
}

func (r *reports) add(n int64) {
	r.mu.Lock()
	r.got = append(r.got, n)
	r.mu.Unlock()
}

func (r *reports) list() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// stallReader returns data in chunks of chunk bytes, then blocks until
// released, then reports EOF.
type stallReader struct {
	data    []byte
	chunk   int
	release chan struct{}
}

func (s *stallReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		<-s.release
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), s.chunk)], s.data)
	s.data = s.data[n:]
	return n, nil
}

func TestReadCounterReportsEveryChunkOfBytes(t *testing.T) {
	var rep reports
	c := newReadCounter(bytes.NewReader(make([]byte, 200<<10)), rep.add)
	c.interval = time.Hour // only the byte threshold and EOF report
	buf := make([]byte, 16<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	c.Stop()
	if got, want := rep.list(), []int64{64 << 10, 128 << 10, 192 << 10, 200 << 10}; !slices.Equal(got, want) {
		t.Errorf("reports %v, want %v", got, want)
	}
}

// The bytes read just before a stall are reported by the timer even
// though no further Read returns.
func TestReadCounterReportsTheTailBeforeAStall(t *testing.T) {
	var rep reports
	s := &stallReader{data: make([]byte, 10<<10), chunk: 4 << 10, release: make(chan struct{})}
	c := newReadCounter(s, rep.add)
	c.interval = 10 * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := rep.list()
		if len(got) > 0 && got[len(got)-1] == 10<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reports while stalled: %v, want them to reach %d", got, 10<<10)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(s.release)
	<-done
	c.Stop()
	got := rep.list()
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Errorf("reports %v are not strictly increasing", got)
			break
		}
	}
}

// Stop reports what is left at once and nothing afterwards.
func TestReadCounterStop(t *testing.T) {
	var rep reports
	c := newReadCounter(bytes.NewReader(make([]byte, 1000)), rep.add)
	c.interval = 20 * time.Millisecond
	c.Read(make([]byte, 100))
	c.Stop()
	if got := rep.list(); !slices.Equal(got, []int64{100}) {
		t.Fatalf("reports after Stop %v, want [100]", got)
	}
	time.Sleep(50 * time.Millisecond)
	if got := rep.list(); !slices.Equal(got, []int64{100}) {
		t.Errorf("reports after Stop and the interval %v, want only [100]", got)
	}
}
