package lazy

import (
	"sort"
	"time"
)

// State is where an origin is in its life.
type State string

const (
	// StateFetching: served, chunks being fetched.
	StateFetching State = "fetching"
	// StateLocal: complete, on a file device; the store is not used.
	StateLocal State = "local"
	// StateFailed: the last attach, prefetch pass or switch failed
	// (LastError says why) and is being retried after a backoff.
	StateFailed State = "failed"
	// StateBroken: the directory does not check out; nothing is done
	// with it until an operator removes it (Remove, or by hand).
	StateBroken State = "broken"
)

// OriginStatus is what Status says of one origin. The counters only grow
// while the process runs, so they can be exported as metrics as they are.
type OriginStatus struct {
	Name          string
	State         State
	ChunksPresent int
	ChunksTotal   int
	BytesPresent  int64
	BytesTotal    int64
	OnDemand      int64 // chunks fetched for reads
	Prefetched    int64 // chunks fetched by the prefetch
	ReadErrors    int64 // reads of the served device that failed
	FetchErrors   int64 // chunk fetches that failed (on demand or prefetch)
	LastError     string
	LastErrorAt   time.Time
	DevicePath    string // "" when it has no device
}

// Status reports every origin, by name.
func (m *Manager) Status() []OriginStatus {
	m.mu.Lock()
	origins := make([]*origin, 0, len(m.origins))
	for _, o := range m.origins {
		origins = append(origins, o)
	}
	m.mu.Unlock()
	out := make([]OriginStatus, 0, len(origins))
	for _, o := range origins {
		out = append(out, o.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (o *origin) status() OriginStatus {
	o.mu.Lock()
	s := OriginStatus{Name: trunc(o.name)}
	switch {
	case o.broken:
		s.State = StateBroken
	case o.dev != nil && !o.served && !o.switching:
		s.State = StateLocal
	case o.failing:
		s.State = StateFailed
	default:
		s.State = StateFetching
	}
	if o.dev != nil {
		s.DevicePath = o.dev.Path()
	}
	last := o.err
	o.mu.Unlock()
	if c := o.cache; c != nil {
		s.ChunksPresent, s.ChunksTotal = c.bm.present(), c.bm.n
		s.BytesPresent, s.BytesTotal = c.presentBytes.Load(), c.man.Bytes()
		s.OnDemand, s.Prefetched = c.onDemand.Load(), c.prefetched.Load()
		s.ReadErrors, s.FetchErrors = c.readErrors.Load(), c.fetchErrors.Load()
		if e := c.lastErr.Load(); e != nil && (last == nil || e.at.After(last.at)) {
			last = e
		}
	}
	if last != nil {
		s.LastError, s.LastErrorAt = last.err.Error(), last.at
	}
	return s
}
