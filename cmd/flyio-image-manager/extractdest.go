package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/stagedir"
)

// extractDest extracts r for --dest: into a directory beside dest that
// becomes dest only once the whole archive passed, so a failed archive
// leaves nothing (see stagedir). A layer goes onto what dest already
// holds, so into a non-empty dest it is applied in place, and a failure
// says dest was changed.
func extractDest(ctx context.Context, r io.Reader, dest string, opts extract.Options) (extract.Result, error) {
	st, err := stagedir.New(dest)
	switch {
	case errors.Is(err, stagedir.ErrNotEmpty) && opts.Mode == extract.Layer:
		res, err := extract.Extract(ctx, r, dest, opts)
		if err != nil {
			return res, fmt.Errorf("%w; %s was changed in place before the failure (a layer applies onto what the directory holds, so it is not staged): "+
				"it holds part of the layer, up to entry %d; restore it from a copy or discard it", err, dest, res.Entries)
		}
		return res, nil
	case errors.Is(err, stagedir.ErrNotEmpty):
		return extract.Result{}, fmt.Errorf("--dest %w: extract would replace what is there; give a new or empty directory", err)
	case err != nil:
		return extract.Result{}, fmt.Errorf("--dest %s: %w", dest, err)
	}
	res, err := extract.Extract(ctx, r, st.Dir(), opts)
	if err != nil {
		if aerr := st.Abort(); aerr != nil {
			return res, fmt.Errorf("%w; the partial tree is left: %v", err, aerr)
		}
		return res, fmt.Errorf("%w; nothing was written to %s", err, st.Dest())
	}
	return res, st.Commit()
}
