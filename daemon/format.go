package daemon

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clawd-dev/clawd/proxy/usage"
)

// FormatList prints `clawd ls` as a table.
func FormatList(w io.Writer, list []AttachmentInfo, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tRUNTIME\tNAMESPACE\tCGROUP\tATTACHED\tREDIRECTED\tDNS\tUDP-REFUSED\tSOCK-REFUSED\tDROPPED\tTLS-UNTRUSTED\tLAYERS\tSTATE\tINTERFACES")
	var notes []string
	for _, a := range list {
		layers := "cgroup"
		if len(a.Layers.TCX) > 0 {
			layers += "+tcx"
		}
		if len(a.Layers.TCXPeers) > 0 {
			layers += "+peer"
		}
		if len(a.Layers.TCXLower) > 0 {
			layers += "+lower"
		}
		if a.Layers.LSM {
			layers += "+lsm"
		}
		var ifs []string
		for _, i := range a.Layers.Interfaces {
			via := i.Via
			if !i.Covered {
				via = "NOT-COVERED"
				notes = append(notes, fmt.Sprintf("%s: %s is not covered: %s", a.Container.Name, i.Name, i.Why))
			} else if i.Note != "" {
				notes = append(notes, fmt.Sprintf("%s: %s: %s", a.Container.Name, i.Name, i.Note))
			}
			ifs = append(ifs, i.Name+":"+via)
		}
		if a.Reason != "" {
			notes = append(notes, fmt.Sprintf("%s: %s: %s", a.Container.Name, a.State, a.Reason))
		}
		for _, u := range a.Budgets {
			notes = append(notes, fmt.Sprintf("%s: budget %s: %s", a.Container.Name, u.Budget, formatUsage(u, now)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n",
			a.Container.Name, a.Container.Runtime, dash(a.Container.Namespace), a.Cgroup,
			now.Sub(a.AttachedAt).Truncate(time.Second), a.Counters.Redirected, a.Counters.DNS,
			a.Counters.UDPRefused, a.Counters.SockRefused+a.Counters.OptRefused,
			a.Counters.PktDropped+a.Counters.IfDropped, a.TLSUntrusted, layers, dash(a.State), dash(strings.Join(ifs, " ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// FormatStatus prints `clawd status`.
func FormatStatus(w io.Writer, s Status) {
	fmt.Fprintf(w, "clawd %s, up since %s\n", s.Version, s.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "attachments:       %d\n", s.Attachments)
	fmt.Fprintf(w, "pending approvals: %d\n", s.PendingApproval)
	fmt.Fprintf(w, "policy:            %s (%d rules, loaded %s)\n", s.Policy, s.PolicyRules, s.PolicyReloaded.Format(time.RFC3339))
	if s.PolicyError != "" {
		fmt.Fprintf(w, "policy error:      %s\n                   (the previous policy stays in force)\n", s.PolicyError)
	}
	fmt.Fprintf(w, "runtimes:          %s\n", strings.Join(s.Runtimes, ", "))
	fmt.Fprintf(w, "approval API:      %s\n", s.APIListen)
	if s.MetricsListen != "" {
		fmt.Fprintf(w, "metrics:           %s\n", s.MetricsListen)
	}
	fmt.Fprintf(w, "audit log:         %s\n", s.AuditLog)
	if s.AuditSeq > 0 {
		fmt.Fprintf(w, "audit chain head:  seq %d, sha256 %s\n", s.AuditSeq, s.AuditHead)
	}
	fmt.Fprintf(w, "pins:              %s\n", s.PinRoot)
}

// formatUsage is one budget's line in `clawd ls`, e.g.
// "1234/2000000 tokens, 3/100 requests in the 24h window (resets in 5h2m)",
// with ", 2 in flight reserving 8200 tokens" while requests run.
func formatUsage(u usage.Usage, now time.Time) string {
	var parts []string
	if u.TokenLimit > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d tokens", u.Tokens, u.TokenLimit))
	} else {
		parts = append(parts, fmt.Sprintf("%d tokens", u.Tokens))
	}
	if u.RequestLimit > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d requests", u.Requests, u.RequestLimit))
	} else {
		parts = append(parts, fmt.Sprintf("%d requests", u.Requests))
	}
	s := strings.Join(parts, ", ") + fmt.Sprintf(" in the %s window (resets in %s)", u.Window, u.WindowResets.Sub(now).Round(time.Second))
	if u.InFlight > 0 {
		s += fmt.Sprintf(", %d in flight reserving %d tokens", u.InFlight, u.Reserved)
	}
	if u.Spent {
		s += ": SPENT"
	}
	return s
}
