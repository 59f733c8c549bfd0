// Command rmpool removes a flyio-image-manager pool and its active thin
// devices (see harness.RemovePool); the demo uses it to clean up on hosts
// without dmsetup: go run ./test/e2e/rmpool -config FILE.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/service"
	"github.com/superfly/flyio-image-manager/test/harness"
)

func main() {
	path := flag.String("config", "", "the daemon's configuration `FILE`")
	flag.Parse()
	cfg, err := config.Load(*path, true)
	if err == nil {
		err = harness.RemovePool(context.Background(), service.PoolConfig(cfg))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rmpool: %v\n", err)
		os.Exit(1)
	}
}
