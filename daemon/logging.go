package daemon

import (
	"fmt"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/config"
)

// SetupLogging applies log_level and log_format to containerd/log's
// logger, which every package logs through. The JSON format keeps the
// structured fields (key, device_id, run, s3_key, ...) as separate keys
// for log pipelines.
func SetupLogging(cfg config.Config) error {
	if err := log.SetLevel(cfg.LogLevel); err != nil {
		return fmt.Errorf("config: log_level %q: want trace, debug, info, warn or error", cfg.LogLevel)
	}
	if err := log.SetFormat(log.OutputFormat(cfg.LogFormat)); err != nil {
		return fmt.Errorf("config: log_format %q: %w", cfg.LogFormat, err)
	}
	return nil
}
