package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawd-dev/clawd/daemon"
)

// fleetCmd: the hosts that share one fleet database (docs/fleet.md).
func fleetCmd() *cobra.Command {
	c := &cobra.Command{Use: "fleet", Short: "Show the clawd hosts that share this host's fleet database"}
	var out string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the fleet's hosts: state (up, down, stopped), version, attachments, last heartbeat",
		Args:  cobra.NoArgs,
		RunE: withCtx(func(ctx context.Context, _ []string) error {
			fh, err := client().FleetHosts(ctx)
			if err != nil {
				return err
			}
			switch out {
			case "json":
				return printJSON(fh)
			case "", "table":
				return daemon.FormatFleetHosts(os.Stdout, fh, time.Now())
			}
			return fmt.Errorf("unknown output format %q (table or json)", out)
		}),
	}
	ls.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	c.AddCommand(ls)
	return c
}
