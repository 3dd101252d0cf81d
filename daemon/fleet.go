package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
	approvalapi "github.com/clawd-dev/clawd/approval/api"
	"github.com/clawd-dev/clawd/approval/web"
	"github.com/clawd-dev/clawd/fleet"
)

// FleetConfig joins this host to a fleet (docs/fleet.md); an empty
// Database leaves clawd on its own, as before.
type FleetConfig struct {
	// Database is postgres://USER@HOST[:PORT]/DB[?sslmode=...], without
	// a password: that comes from PasswordFile or PasswordSecret.
	Database       string `mapstructure:"database"`
	PasswordFile   string `mapstructure:"password-file"`   // a file holding the password (a mounted Kubernetes Secret)
	PasswordSecret string `mapstructure:"password-secret"` // a clawd-owned secret (`clawd secret set NAME --clawd`)
	// Host is this host's name in the fleet; "" = the machine's hostname.
	Host string `mapstructure:"host"`
	// Heartbeat is how often the host says it is alive (0 = 5s); it is
	// shown as down after three missed beats.
	Heartbeat time.Duration `mapstructure:"heartbeat"`
}

// fleetKeys are bound to CLAWD_FLEET_* environment variables (viper only
// reads the environment for keys it knows of).
var fleetKeys = []string{"database", "password-file", "password-secret", "host", "heartbeat"}

func (f FleetConfig) validate() error {
	if f.Database == "" {
		// host alone is allowed: the DaemonSet sets it on every node.
		if f.PasswordFile != "" || f.PasswordSecret != "" || f.Heartbeat != 0 {
			return errors.New("config: fleet settings without fleet.database")
		}
		return nil
	}
	if f.PasswordFile != "" && f.PasswordSecret != "" {
		return errors.New("config: fleet: set password-file or password-secret, not both")
	}
	if f.Heartbeat < 0 {
		return errors.New("config: fleet.heartbeat must not be negative")
	}
	if f.Host != "" {
		if err := fleet.ValidHostName(f.Host); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	return nil
}

// newFleet opens this host's fleet membership (nil without fleet.database).
// Only configuration errors fail the start: the database itself is
// reached in the background (fleet.Fleet.Run).
func (d *Daemon) newFleet() (*fleet.Fleet, error) {
	c := d.cfg.Fleet
	if c.Database == "" {
		return nil, nil
	}
	var password string
	switch {
	case c.PasswordFile != "":
		b, err := readSmall(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("fleet.password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
		if password == "" || strings.ContainsAny(password, "\r\n\x00") {
			return nil, fmt.Errorf("fleet.password-file %s: want one line, the password", c.PasswordFile)
		}
	case c.PasswordSecret != "":
		var err error
		if password, err = d.credential(c.PasswordSecret); err != nil {
			return nil, fmt.Errorf("fleet.password-secret: %w", err)
		}
	}
	host := c.Host
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("fleet: hostname: %w (set fleet.host)", err)
		}
		host = h
	}
	return fleet.Open(fleet.Config{
		Database: c.Database, Password: password, Host: host, Version: Version,
		Heartbeat: c.Heartbeat, Attachments: d.count, Log: d.log.Named("fleet"),
		// Approvals written during an outage wait here for the database,
		// across a restart.
		Spool: filepath.Join(d.cfg.StateDir, "fleet-approvals.spool"),
	})
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 4096))
}

// fleetStore is the approval store of the fleet (nil = the bbolt file).
// The database is tried once, bounded, so a host starting while it is up
// recovers its approvals and the fleet's grants; while it is down the
// host starts anyway (fleet.Store.Recover says what that costs).
func (d *Daemon) fleetStore() approval.Store {
	if d.fleet == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	defer cancel()
	if err := d.fleet.Beat(ctx); err != nil {
		d.log.Warn("fleet database not reachable at start; retrying in the background", zap.Error(err))
	}
	return d.fleet.Store()
}

// serveFleet lets decisions made on other hosts reach m, and the fleet's
// grants as they change.
func (d *Daemon) serveFleet(m *approval.Manager) {
	if d.fleet != nil {
		d.fleet.Store().Serve(m)
		d.fleet.Store().OnGrants(m.SyncGrants)
		d.fleet.Store().OnRecovered(m.Recovered) // a start during an outage
	}
}

// leasedCards are the channels whose cards, in a fleet, the host holding
// the channel's lease posts (approval.Exclusive); nil without a fleet.
func (d *Daemon) leasedCards(chans []approval.Channel) map[string]bool {
	if d.fleet == nil {
		return nil
	}
	out := map[string]bool{}
	for _, c := range chans {
		if approval.IsExclusive(c) {
			out[c.Name()] = true
		}
	}
	return out
}

// FleetHosts is the answer of GET /v1/fleet/hosts.
type FleetHosts struct {
	Self  string       `json:"self"`
	Hosts []fleet.Host `json:"hosts"`
	// Leases are the single-consumer channels' leases: which host runs
	// which channel.
	Leases []fleet.Lease `json:"leases,omitempty"`
}

func (d *Daemon) handleFleetHosts(w http.ResponseWriter, r *http.Request) {
	if d.fleet == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "this clawd is not in a fleet (fleet.database is not set)"})
		return
	}
	hs, err := d.fleet.Hosts(r.Context())
	if err != nil {
		d.log.Debug("fleet hosts", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "fleet database: " + err.Error()})
		return
	}
	ls, err := d.fleet.AllLeases(r.Context())
	if err != nil {
		d.log.Debug("fleet leases", zap.Error(err))
	}
	writeJSON(w, http.StatusOK, FleetHosts{Self: d.fleet.Name(), Hosts: hs, Leases: ls})
}

func (d *Daemon) handleFleetApprovals(w http.ResponseWriter, r *http.Request) {
	if d.fleet == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "this clawd is not in a fleet (fleet.database is not set)"})
		return
	}
	list, err := d.fleet.Pending(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "fleet database: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// FleetApprovals lists the pending approvals of every host of the fleet.
func (c *Client) FleetApprovals(ctx context.Context) ([]fleet.Held, error) {
	var out []fleet.Held
	err := c.Do(ctx, http.MethodGet, "/v1/fleet/approvals", nil, &out)
	return out, err
}

// FleetHosts lists the hosts of the daemon's fleet.
func (c *Client) FleetHosts(ctx context.Context) (FleetHosts, error) {
	var out FleetHosts
	err := c.Do(ctx, http.MethodGet, "/v1/fleet/hosts", nil, &out)
	return out, err
}

// FormatFleetHosts prints `clawd fleet ls` as a table. Names and versions
// come from the database, which other hosts write: control characters are
// shown as '?', never sent to the terminal.
func FormatFleetHosts(w io.Writer, fh FleetHosts, now time.Time) error {
	runs := map[string][]string{} // host: the channels whose live lease it holds
	for _, l := range fh.Leases {
		if l.Live {
			runs[l.Holder] = append(runs[l.Holder], printable(l.Channel))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tVERSION\tATTACHMENTS\tLAST SEEN\tSTARTED\tRUNS")
	for _, h := range fh.Hosts {
		name := printable(h.Name)
		if h.Self {
			name += " (this host)"
		}
		ch := "-"
		if r := runs[h.Name]; len(r) > 0 {
			sort.Strings(r)
			ch = strings.Join(r, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s ago\t%s\t%s\n", name, printable(h.State), printable(h.Version), h.Attachments,
			now.Sub(h.LastSeen).Round(time.Second), h.Started.UTC().Format(time.RFC3339), ch)
	}
	return tw.Flush()
}

func printable(s string) string {
	if len(s) > 128 {
		s = s[:128] + "…"
	}
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// FormatFleetApprovals prints `clawd approvals --fleet`: the held requests
// grouped by the host holding them (hosts by name), with its state.
func FormatFleetApprovals(w io.Writer, list []fleet.Held, now time.Time) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no held requests on any host")
		return err
	}
	groups := map[string][]approval.Approval{}
	states := map[string]string{}
	for _, h := range list {
		groups[h.HeldOn] = append(groups[h.HeldOn], *h.Approval)
		states[h.HeldOn] = h.HostState
	}
	hosts := make([]string, 0, len(groups))
	for h := range groups {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for i, h := range hosts {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s (%s):\n", printable(h), printable(states[h]))
		if err := approvalapi.FormatTable(w, groups[h], now); err != nil {
			return err
		}
	}
	return nil
}

// webFleet lets the approvals page show every host's holds (nil without
// a fleet: the page shows this host's).
func (d *Daemon) webFleet() web.Fleet {
	if d.fleet == nil {
		return nil
	}
	return webFleet{d.fleet}
}

type webFleet struct{ f *fleet.Fleet }

func (w webFleet) Self() string { return w.f.Name() }

func (w webFleet) Pending(ctx context.Context) ([]web.Held, error) {
	list, err := w.f.Pending(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]web.Held, len(list))
	for i, h := range list {
		out[i] = web.Held{HeldOn: h.HeldOn, HostState: h.HostState, Approval: h.Approval}
	}
	return out, nil
}
