package importer

import (
	"slices"
	"sort"

	"github.com/superfly/flyio-image-manager/metadata"
)

// Queue names, as queue-status --queue takes them.
const (
	QueueDownloads = "downloads"
	QueueUnpacks   = "unpacks"
)

// QueueInfo is a snapshot of one queue.
type QueueInfo struct {
	Name     string `json:"name"`
	Capacity int    `json:"capacity"`
	Active   int    `json:"active"`
	Waiting  int    `json:"waiting"`
	// Runs are the process-image runs in the queue: holders first
	// (Position 0), then those waiting in line (Position 1 goes next).
	// The downloads queue is shared with layer fills, which count in
	// Active and Waiting but are not runs.
	Runs []QueuedRun `json:"runs"`
}

// QueuedRun is a run's place in a queue.
type QueuedRun struct {
	ID       string            `json:"id"`
	Key      string            `json:"s3_key"`
	State    metadata.RunState `json:"state"`
	Position int               `json:"position"`
}

// Queues returns the downloads queue (s3fetch's, shared by every
// download) and the unpacks queue (runs admitted to download and
// extract). It takes no database transaction and holds each lock only to
// copy, so it is cheap enough for a metrics scrape.
func (im *Importer) Queues() []QueueInfo {
	type live struct {
		run      metadata.Run
		download string
		dlSeq    uint64
	}
	im.mu.Lock()
	states := make([]*runState, 0, len(im.active))
	for _, rs := range im.active {
		states = append(states, rs)
	}
	im.mu.Unlock()
	runs := map[string]live{}
	for _, rs := range states {
		rs.mu.Lock()
		runs[rs.run.ID] = live{run: rs.run, download: rs.download, dlSeq: rs.dlSeq}
		rs.mu.Unlock()
	}
	entry := func(id string, pos int) QueuedRun {
		l := runs[id]
		return QueuedRun{ID: id, Key: l.run.Key, State: l.run.State, Position: pos}
	}

	capacity, active, waiting := im.unpacks.snapshot()
	unpacks := QueueInfo{Name: QueueUnpacks, Capacity: capacity, Active: len(active), Waiting: len(waiting), Runs: []QueuedRun{}}
	for _, id := range active {
		unpacks.Runs = append(unpacks.Runs, entry(id, 0))
	}
	for i, id := range waiting {
		unpacks.Runs = append(unpacks.Runs, entry(id, i+1))
	}

	downloads := QueueInfo{Name: QueueDownloads, Runs: []QueuedRun{}}
	if im.s3 != nil {
		st := im.s3.QueueStats()
		downloads.Capacity, downloads.Active, downloads.Waiting = st.Capacity, st.Active, st.Waiting
	}
	var dlActive, dlWaiting []live
	for _, l := range runs {
		switch l.download {
		case "active":
			dlActive = append(dlActive, l)
		case "waiting":
			dlWaiting = append(dlWaiting, l)
		}
	}
	for _, ls := range [][]live{dlActive, dlWaiting} {
		sort.Slice(ls, func(i, j int) bool { return ls[i].dlSeq < ls[j].dlSeq })
	}
	for _, l := range dlActive {
		downloads.Runs = append(downloads.Runs, entry(l.run.ID, 0))
	}
	for i, l := range dlWaiting {
		downloads.Runs = append(downloads.Runs, entry(l.run.ID, i+1))
	}
	return []QueueInfo{downloads, unpacks}
}

// setDownload records where rs is in the downloads queue.
func (im *Importer) setDownload(rs *runState, where string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if where != rs.download {
		rs.download, rs.dlSeq = where, im.dlSeq.Add(1)
	}
}

// Recent returns every unfinished run and the last n finished ones,
// newest first, with live progress: what status shows.
func (im *Importer) Recent(n int) ([]metadata.Run, error) {
	runs, err := im.List()
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(runs, func(a, b metadata.Run) int { return b.Created.Compare(a.Created) })
	out := []metadata.Run{}
	finished := 0
	for _, r := range runs {
		if r.State.Finished() {
			if finished >= n {
				continue
			}
			finished++
		}
		out = append(out, r)
	}
	return out, nil
}
