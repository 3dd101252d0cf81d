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

// fleetApprovals is `clawd approvals --fleet`: one table per holding host.
func fleetApprovals(ctx context.Context, container, out string) error {
	list, err := client().FleetApprovals(ctx)
	if err != nil {
		return err
	}
	if container != "" {
		kept := list[:0]
		for _, h := range list {
			c := h.Container
			if container == c.Name || container == c.ID || container == c.Key() {
				kept = append(kept, h)
			}
		}
		list = kept
	}
	if out == "json" {
		return printJSON(list)
	}
	if out != "" && out != "table" {
		return fmt.Errorf("unknown output format %q (table or json)", out)
	}
	return daemon.FormatFleetApprovals(os.Stdout, list, time.Now())
}
