package daemon

import (
	"context"
	"strings"
)

// coverageChecks are `clawd doctor`'s lines for the running daemon's
// attachments: per container, how each interface is covered.
func coverageChecks(ctx context.Context, socket string) []Check {
	list, err := NewClient(socket).List(ctx)
	if err != nil {
		return []Check{{Name: "coverage", OK: true, Warn: true, Info: "cannot list attachments: " + err.Error()}}
	}
	var out []Check
	for _, a := range list {
		c := Check{Name: "coverage " + a.Container.Name, OK: true}
		var parts []string
		for _, i := range a.Layers.Interfaces {
			switch {
			case !i.Covered:
				// Attached all the same: nothing in the container can
				// open a packet socket.
				parts = append(parts, i.Name+" ("+i.Kind+") NOT covered: "+i.Why+"; safe only while no process of the container can hold CAP_NET_RAW")
				c.Warn, c.Fix = true, coverageFix
			case i.Note != "":
				parts = append(parts, i.Name+" ("+i.Kind+") via "+i.Via+", limit: "+i.Note)
				c.Warn = true
			default:
				parts = append(parts, i.Name+" ("+i.Kind+") via "+i.Via)
			}
		}
		if len(parts) == 0 {
			parts = append(parts, "no interface besides lo")
		}
		if a.State != StateEnforced {
			c.OK, c.Warn = false, false
			parts = append(parts, a.State+": "+a.Reason)
			if a.State == StateCutOff {
				c.Fix = coverageFix
			} else {
				c.Fix = "see the daemon log; clawd retries at every sweep, `clawd detach " + a.ID + "` removes it"
			}
		}
		c.Info = strings.Join(parts, "; ")
		out = append(out, c)
	}
	return out
}
