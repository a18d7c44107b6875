package main

import (
	"context"
	"io"
)

// cmdRunArgs is `gcnats [run]`: the sidecar, which takes no flags.
func cmdRunArgs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := noArgs("run", args, stdout); err != nil {
		return err
	}
	return cmdRun(ctx, stderr)
}
