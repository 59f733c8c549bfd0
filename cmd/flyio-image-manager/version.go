package main

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/dmpool"
)

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the version, and the kernel's device-mapper driver version when available",
	Action: func(c *cli.Context) error {
		fmt.Printf("flyio-image-manager %s (%s)\n", version, runtime.Version())
		if v, err := dmpool.DriverVersion(); err == nil {
			fmt.Printf("device-mapper driver %s\n", v)
		} else {
			fmt.Printf("device-mapper: unavailable (%v)\n", err)
		}
		return nil
	},
}
