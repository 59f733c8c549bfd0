package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/containerd/errdefs"
)

// Pool trouble that may have lost writes: what status shows of it, and
// the operator's way to commit one container snapshot anyway.

// TroubleBackend is the daemon's side of accept-lost-writes.
type TroubleBackend interface {
	AcceptLostWrites(ctx context.Context, req AcceptLostWritesRequest) (AcceptLostWritesResult, error)
}

// PoolTrouble is status's view of the pool trouble generation: raised
// each time the pool is seen out of data space, read-only, failed or
// needing a check, or with device-mapper events nobody explained. Commit
// refuses an active snapshot prepared before the latest raise.
type PoolTrouble struct {
	Generation uint64 `json:"generation"`
	// LastReason and LastAt describe the latest raise (empty and zero
	// when the generation is 0).
	LastReason string     `json:"last_reason,omitempty"`
	LastAt     *time.Time `json:"last_at,omitempty"`
	// RefusedAtCommit counts the active snapshots Commit would refuse
	// now: prepared before the latest raise, or every active snapshot
	// while the pool is in trouble.
	RefusedAtCommit int `json:"refused_at_commit"`
}

// AcceptLostWritesRequest asks that active snapshot Key (our key, as
// Commit's refusal and `snapshots` name it) be committable although the
// pool had trouble up to trouble generation Generation since it was
// prepared.
type AcceptLostWritesRequest struct {
	Key        string `json:"key"`
	Generation uint64 `json:"generation"`
}

// AcceptLostWritesResult says what was accepted: the snapshot's trouble
// generation went From -> To; PoolGeneration is the pool's. StillRefused
// is set when the pool had trouble after To, so Commit still refuses.
type AcceptLostWritesResult struct {
	Key            string   `json:"key"`
	From           uint64   `json:"from"`
	To             uint64   `json:"to"`
	PoolGeneration uint64   `json:"pool_generation"`
	StillRefused   bool     `json:"still_refused"`
	Reasons        []string `json:"reasons,omitempty"`
}

func troubleRoutes(mux *http.ServeMux, b TroubleBackend) {
	mux.HandleFunc("POST /v1/snapshots/accept-lost-writes", func(w http.ResponseWriter, r *http.Request) {
		var req AcceptLostWritesRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, fmt.Errorf("bad request body: %v: %w", err, errdefs.ErrInvalidArgument))
			return
		}
		res, err := b.AcceptLostWrites(r.Context(), req)
		reply(w, res, err)
	})
}

// AcceptLostWrites asks the daemon to let one snapshot be committed
// whose writes may have been lost to pool trouble.
func (c *Client) AcceptLostWrites(ctx context.Context, req AcceptLostWritesRequest) (AcceptLostWritesResult, error) {
	var res AcceptLostWritesResult
	err := c.do(ctx, http.MethodPost, "/v1/snapshots/accept-lost-writes", req, &res)
	return res, err
}
