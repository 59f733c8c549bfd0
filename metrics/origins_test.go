package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestOriginCollector(t *testing.T) {
	c := NewOriginCollector(func() []OriginFigures {
		return []OriginFigures{{Origin: "bi-1", State: "fetching", ChunksPresent: 3, ChunksTotal: 10, OnDemandFetches: 2, Prefetched: 1, ReadErrors: 4}}
	})
	want := `
# HELP flyio_lazy_read_errors_total Reads of an origin answered with an I/O error (a failed or timed-out fetch): each is an EIO a process got.
# TYPE flyio_lazy_read_errors_total counter
flyio_lazy_read_errors_total{origin="bi-1"} 4
# HELP flyio_lazy_origin_chunks Chunks of a lazily-backed origin's block image: present in its cache, or in all (kind), with the origin's state.
# TYPE flyio_lazy_origin_chunks gauge
flyio_lazy_origin_chunks{kind="present",origin="bi-1",state="fetching"} 3
flyio_lazy_origin_chunks{kind="total",origin="bi-1",state="fetching"} 10
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "flyio_lazy_read_errors_total", "flyio_lazy_origin_chunks"); err != nil {
		t.Fatal(err)
	}
}
