//go:build !unix

package main

import "os"

// ttyColumns is 0 where gcnats does not ask the terminal: COLUMNS or the
// default applies.
func ttyColumns(*os.File) int { return 0 }
