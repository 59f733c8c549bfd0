package metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

var bucketQuarantine = []byte("quarantine")

// Quarantined is a record set aside because it could not be decoded.
type Quarantined struct {
	Bucket string    `json:"bucket"`
	Key    []byte    `json:"key"`
	Value  []byte    `json:"value"`
	Reason string    `json:"reason"`
	When   time.Time `json:"when"`
}

// quarantinable lists the buckets whose records are decoded one by one,
// with the type each must decode as.
var quarantinable = []struct {
	bucket []byte
	decode func([]byte) error
}{
	{bucketSnapshots, func(v []byte) error { return json.Unmarshal(v, new(Snapshot)) }},
	{bucketDevices, func(v []byte) error { return json.Unmarshal(v, new(Device)) }},
	{bucketTemplates, func(v []byte) error { return json.Unmarshal(v, new(Template)) }},
	{bucketOps, func(v []byte) error { return json.Unmarshal(v, new(Op)) }},
	{bucketRuns, func(v []byte) error { return json.Unmarshal(v, new(Run)) }},
	{bucketImages, func(v []byte) error { return json.Unmarshal(v, new(Image)) }},
}

// QuarantineUndecodable moves every record that does not decode into the
// quarantine bucket, so that one bad record never stops the daemon from
// starting and nothing is silently dropped: the bytes stay in the
// database for an operator. A quarantined device record is replaced by a
// placeholder in state quarantined, so gc reports the thin id. It returns
// one line per record moved.
func (t *Tx) QuarantineUndecodable() ([]string, error) {
	q, err := t.tx.CreateBucketIfNotExists(bucketQuarantine)
	if err != nil {
		return nil, err
	}
	var moved []string
	for _, qb := range quarantinable {
		b := t.bucket(qb.bucket)
		type bad struct {
			k, v []byte
			err  error
		}
		var bads []bad
		b.ForEach(func(k, v []byte) error {
			if err := qb.decode(v); err != nil {
				bads = append(bads, bad{append([]byte(nil), k...), append([]byte(nil), v...), err})
			}
			return nil
		})
		for _, r := range bads {
			rec := Quarantined{Bucket: string(qb.bucket), Key: r.k, Value: r.v, Reason: r.err.Error(), When: time.Now().UTC()}
			seq, err := q.NextSequence()
			if err != nil {
				return moved, err
			}
			if err := put(q, u64(seq), rec); err != nil {
				return moved, err
			}
			if err := b.Delete(r.k); err != nil {
				return moved, err
			}
			what := fmt.Sprintf("%s record %q", qb.bucket, r.k)
			if string(qb.bucket) == string(bucketDevices) && len(r.k) == 4 {
				id := uint32(r.k[0])<<24 | uint32(r.k[1])<<16 | uint32(r.k[2])<<8 | uint32(r.k[3])
				what = fmt.Sprintf("device record %d", id)
				if err := t.PutDevice(&Device{ID: id, State: DeviceQuarantined, Error: "undecodable record: " + r.err.Error()}); err != nil {
					return moved, err
				}
			}
			moved = append(moved, fmt.Sprintf("%s: %v", what, r.err))
		}
	}
	return moved, t.dropDanglingChildren()
}

// dropDanglingChildren removes parent-index entries whose child record is
// gone (quarantined): they would keep the parent from ever being removed.
func (t *Tx) dropDanglingChildren() error {
	c, snaps := t.bucket(bucketChildren), t.bucket(bucketSnapshots)
	var dangling [][]byte
	c.ForEach(func(k, _ []byte) error {
		if i := bytes.IndexByte(k, 0); i >= 0 && snaps.Get(k[i+1:]) == nil {
			dangling = append(dangling, append([]byte(nil), k...))
		}
		return nil
	})
	for _, k := range dangling {
		if err := c.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Quarantine lists the records set aside so far.
func (t *Tx) Quarantine() ([]*Quarantined, error) {
	b := t.bucket(bucketQuarantine)
	if b == nil {
		return nil, nil
	}
	return all[Quarantined](b, "quarantined record %x")
}
