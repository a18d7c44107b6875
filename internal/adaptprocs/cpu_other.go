//go:build !unix

package adaptprocs

import (
	"errors"
	"time"
)

func processCPU() (time.Duration, error) {
	return 0, errors.New("no process cpu clock on this platform")
}
