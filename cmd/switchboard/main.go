// Command switchboard is the Switchboard CLI and hub; see package cli.
package main

import (
	"os"

	"github.com/switchboard-dev/switchboard/cli"
)

func main() { os.Exit(cli.Main()) }
