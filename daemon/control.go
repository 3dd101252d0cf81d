package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/clawd-dev/clawd/approval/web"

	"github.com/clawd-dev/clawd/daemon/enforce"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	approvalapi "github.com/clawd-dev/clawd/approval/api"
	"github.com/clawd-dev/clawd/proxy/usage"
)

// AttachmentInfo is one row of `clawd ls`.
type AttachmentInfo struct {
	Record
	Counters enforce.Counters `json:"counters"`
	// FastPath counts the connects the kernel let through without the
	// proxy (issue 18) and the fast-path events it could not report.
	FastPath enforce.FastCounters `json:"fast_path"`
	State    string               `json:"state"`            // StateEnforced, StateCutOff or StateInDoubt
	Reason   string               `json:"reason,omitempty"` // why cut off or in doubt
	// TLSUntrusted counts intercepted handshakes the container aborted on
	// clawd's certificate: some runtime in it does not trust clawd's CA.
	TLSUntrusted uint64 `json:"tls_untrusted"`
	// The listeners in the container's network namespace, on 127.0.0.1
	// (and ::1): TCP proxy and UDP DNS. They change when clawd restarts.
	ProxyPort uint16 `json:"proxy_port,omitempty"`
	DNSPort   uint16 `json:"dns_port,omitempty"`
	// Budgets is what the container spent of the policy's LLM budgets in
	// their current windows (issue 16, budget).
	Budgets []usage.Usage `json:"budgets,omitempty"`
}

// Attachment states in `clawd ls`.
const (
	StateEnforced = "enforced"
	StateCutOff   = "cut-off"  // frozen by clawd: it could send frames clawd does not see
	StateInDoubt  = "in-doubt" // pinned (cut off) but not re-adopted; retried at every sweep
)

// Status is the answer of GET /v1/status.
type Status struct {
	Version         string    `json:"version"`
	Started         time.Time `json:"started"`
	Attachments     int       `json:"attachments"`
	Policy          string    `json:"policy"`
	PolicyRules     int       `json:"policy_rules"`
	PolicyReloaded  time.Time `json:"policy_reloaded"`
	PolicyError     string    `json:"policy_error,omitempty"`
	Runtimes        []string  `json:"runtimes"`
	PinRoot         string    `json:"pin_root"`
	APIListen       string    `json:"api_listen"`
	MetricsListen   string    `json:"metrics_listen,omitempty"`
	AuditLog        string    `json:"audit_log"`
	PendingApproval int       `json:"pending_approvals"`

	// The audit chain's head (auditx): `clawd audit verify` of the file
	// should end at this seq; fewer lines were cut off.
	AuditSeq  int64  `json:"audit_seq,omitempty"`
	AuditHead string `json:"audit_head,omitempty"`
}

// listenControl opens the root-only control socket.
func (d *Daemon) listenControl() (net.Listener, error) {
	path := d.cfg.Socket
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another clawd daemon is serving %s", path)
	}
	os.Remove(path)
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return &rootOnly{Listener: ln, confined: d.confinedPID}, nil
}

// rootOnly refuses connections from any user but root, even if the socket's
// mode was loosened by hand, and from any process inside an attached
// container's cgroup even if it is root there (the socket may have been
// mounted into the container): the agent must not detach itself, approve
// its own requests or read the CA.
type rootOnly struct {
	net.Listener
	// confined reports whether the peer process pid is in an attached
	// cgroup (or cannot be checked); nil skips the check.
	confined func(pid int32) bool
}

func (l *rootOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		cred, err := peerCred(uc)
		if err == nil && cred.Uid == 0 && (l.confined == nil || !l.peerConfined(uc, cred.Pid)) {
			return c, nil
		}
		go refuse(c)
	}
}

// peerConfined asks confined about the peer process. With SO_PEERPIDFD
// (Linux 6.5+) the peer is pinned by a pidfd, its pid is read from it, and
// the process must still be alive after its cgroup was read: a peer that
// exited (whose pid a host process could have reused) counts as confined.
// Older kernels fall back to the SO_PEERCRED pid.
func (l *rootOnly) peerConfined(c *net.UnixConn, credPID int32) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	pidfd, perr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		pidfd, perr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		return true
	}
	if perr != nil {
		if errors.Is(perr, unix.ENOPROTOOPT) {
			return l.confined(credPID)
		}
		return true
	}
	defer unix.Close(pidfd)
	pid, err := pidOfPidfd(pidfd)
	if err != nil || pid <= 0 {
		return true
	}
	if l.confined(pid) {
		return true
	}
	return unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil
}

// pidOfPidfd reads the "Pid:" line of a pidfd's fdinfo (-1 once the
// process has exited).
func pidOfPidfd(pidfd int) (int32, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			var pid int32
			if _, err := fmt.Sscan(strings.TrimSpace(v), &pid); err != nil {
				return 0, err
			}
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no Pid in pidfd fdinfo")
}

// confinedPID reports whether pid's cgroup is an attached cgroup or below
// one. A pid whose cgroup cannot be read counts as confined (fail closed).
func (d *Daemon) confinedPID(pid int32) bool {
	cg, err := cgroupPathOfPID(pid)
	if err != nil {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.atts {
		if underCgroup(cg, a.Cgroup) {
			return true
		}
	}
	for _, x := range d.doubt {
		if x.Cgroup != "" && underCgroup(cg, x.Cgroup) {
			return true
		}
	}
	return false
}

// cgroupPathOfPID is the absolute cgroup v2 directory of pid ("/" relative
// paths map to the mount itself).
func cgroupPathOfPID(pid int32) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("no peer pid")
	}
	root, err := enforce.Cgroup2Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok {
			if !strings.HasPrefix(rel, "/") {
				return "", fmt.Errorf("bad cgroup v2 path %q", rel)
			}
			return filepath.Clean(filepath.Join(root, rel)), nil
		}
	}
	return "", fmt.Errorf("pid %d has no cgroup v2 membership", pid)
}

// underCgroup reports whether cg is base or a descendant of base.
func underCgroup(cg, base string) bool {
	base = filepath.Clean(base)
	return cg == base || strings.HasPrefix(cg, base+"/")
}

// refuse reads the (bounded) request so the client sees the answer rather
// than a broken pipe, then answers 403.
func refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if req, err := http.ReadRequest(bufio.NewReader(io.LimitReader(c, 1<<16))); err == nil {
		io.Copy(io.Discard, req.Body)
	}
	body := `{"error":"clawd's control socket accepts only root outside attached containers"}`
	fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, cerr
	}
	return cred, nil
}

func (d *Daemon) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, d.Status()) })
	mux.HandleFunc("GET /v1/attachments", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, d.List()) })
	mux.HandleFunc("POST /v1/attach", func(w http.ResponseWriter, r *http.Request) {
		var req AttachRequest
		if err := decodeJSON(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		rec, err := d.Attach(r.Context(), req)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, 200, rec)
	})
	mux.HandleFunc("POST /v1/inspect", func(w http.ResponseWriter, r *http.Request) {
		var req InspectRequest
		if err := decodeJSON(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		rep, err := d.Inspect(r.Context(), req)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, 200, rep)
	})
	mux.HandleFunc("POST /v1/detach", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Container string `json:"container"`
			Namespace string `json:"namespace,omitempty"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		rec, err := d.Detach(req.Container, req.Namespace, "detached by operator")
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, 200, rec)
	})
	mux.HandleFunc("POST /v1/policy/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Reload(); err != nil {
			writeErr(w, &UserError{Status: 422, Err: fmt.Errorf("policy reload failed, the previous policy stays in force: %w", err)})
			return
		}
		writeJSON(w, 200, map[string]any{"reloaded": true, "rules": d.policy.Current().Rules()})
	})
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(d.ca.CertPEM())
	})
	api := approvalapi.Local(d.approvals)
	mux.HandleFunc("GET /v1/fleet/hosts", d.handleFleetHosts)
	mux.HandleFunc("GET /v1/fleet/approvals", d.handleFleetApprovals)
	mux.Handle("/v1/approvals", api)
	mux.Handle("/v1/approvals/", api)
	mux.Handle("/v1/grants", api)
	mux.Handle("/v1/grants/", api)
	return mux
}

func (d *Daemon) publicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"ok": true, "attachments": d.count()})
	})
	mounts := map[string]http.Handler{web.Prefix: web.Handler(d.approvals, web.Options{Token: d.apiToken, Fleet: d.webFleet(), Log: d.log.Named("web")})}
	for p, h := range d.mounts {
		mounts[p] = h
	}
	mux.Handle("/", approvalapi.Public(d.approvals, approvalapi.Options{Token: d.apiToken, Mount: mounts}))
	return mux
}

// Status reports the daemon's state for `clawd status`.
func (d *Daemon) Status() Status {
	s := Status{
		Version: Version, Started: d.started, Attachments: d.count(), Policy: d.cfg.Policy,
		PolicyReloaded: d.policy.LastReload(), PinRoot: d.cfg.PinRoot, APIListen: d.cfg.APIListen,
		MetricsListen: d.cfg.MetricsListen, AuditLog: d.cfg.AuditLog,
	}
	s.AuditSeq, s.AuditHead = d.audit.Head()
	if p := d.policy.Current(); p != nil {
		s.PolicyRules = p.Rules()
	}
	if err := d.policy.LastError(); err != nil {
		s.PolicyError = err.Error()
	}
	for _, r := range d.rt {
		s.Runtimes = append(s.Runtimes, r.Name())
	}
	pending, _ := d.approvals.List("")
	s.PendingApproval = len(pending)
	return s
}

// List returns the attachments with their counters, sorted by name.
func (d *Daemon) List() []AttachmentInfo {
	d.mu.Lock()
	out := make([]AttachmentInfo, 0, len(d.atts))
	for _, a := range d.atts {
		i := AttachmentInfo{Record: a.Record, State: StateEnforced, ProxyPort: a.ls.tcpPort(), DNSPort: a.ls.udpPort()}
		if a.cutOff != "" {
			i.State, i.Reason = StateCutOff, a.cutOff
		}
		out = append(out, i)
	}
	d.mu.Unlock()
	out = append(out, d.doubtInfos()...)
	for i := range out {
		out[i].Counters, _ = d.enf.Counters(out[i].CgroupID)
		out[i].FastPath, _ = d.enf.FastCounters(out[i].CgroupID)
		out[i].TLSUntrusted = d.proxy.Untrusted(out[i].Container.Key())
		out[i].Budgets = d.usage.Usage(out[i].Container.BudgetKey(), time.Now())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Container.Name < out[j].Container.Name })
	return out
}

func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &UserError{Status: 400, Err: fmt.Errorf("bad request body: %w", err)}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	status := 500
	var ue *UserError
	if errors.As(err, &ue) {
		status = ue.Status
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// bpfCollector exports the per-container BPF counters.
type bpfCollector struct{ d *Daemon }

var bpfDesc = prometheus.NewDesc("clawd_bpf_events_total", "Kernel-side events per attached container.", []string{"container", "event"}, nil)

func (c *bpfCollector) Describe(ch chan<- *prometheus.Desc) { ch <- bpfDesc }

func (c *bpfCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range c.d.List() {
		n := a.Container.Name
		k := a.Counters
		for ev, v := range map[string]uint64{
			"redirected": k.Redirected, "dns": k.DNS, "udp_refused": k.UDPRefused, "socket_refused": k.SockRefused,
			"sockopt_refused": k.OptRefused, "packet_dropped": k.PktDropped, "interface_dropped": k.IfDropped,
			"fast_path": a.FastPath.Fast, "fast_path_events_lost": a.FastPath.EvLost,
		} {
			ch <- prometheus.MustNewConstMetric(bpfDesc, prometheus.CounterValue, float64(v), strings.TrimPrefix(n, "/"), ev)
		}
	}
}
