// Package suggest turns what clawd's audit log saw into a proposed policy:
// the rules that would allow it, for `clawd policy suggest`. Reads
// (GET, HEAD, OPTIONS) are grouped per host into one allow rule with
// generalised paths, writes become approve rules per host and method,
// connections seen without HTTP become allow rules by host (or public
// address) and port. It never proposes a rule that reaches a special
// address (loopback, link-local and metadata, private, the host's own;
// internal/addrclass), nor a name that was ever audited at one.
//
// What the author's own rules refused or held is never proposed: only
// requests the default action refused (or that were allowed) are
// candidates; a request a named deny rule refused, in audit or enforce
// mode, is not, nor a read a named approve rule held.
//
// The audit log is hostile input (an agent chose its hosts, paths and
// methods): one line never makes the whole proposal fail. Bad or
// oversized lines are skipped and counted, names are normalised by
// internal/hostname and dropped unless the policy parser's own check
// (policy.ValidHost) takes them, requests whose path is not plain
// ("/**", "/%2e%2e", "/a b") are skipped and counted rather than widening
// a rule, every scalar of the output is quoted, rule and set names are
// made valid and unique, each container has its own observation cap, and
// the output is parsed by the policy parser before it is returned.
package suggest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/internal/hostaddrs"
	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/policy"
)

// Options select what is read and how the proposal is made.
type Options struct {
	// Since skips entries older than it (zero: all).
	Since time.Time
	// Container keeps only this container's entries ("": every container,
	// one set each).
	Container string
	// Current is the policy in force: with it, only the rules for what it
	// does not already allow (or hold, for writes) are proposed. nil: a
	// whole policy for everything seen.
	Current *policy.Policy
	// Classify says whether an audited destination address is special.
	// nil: addrclass's fixed ranges plus the addresses of the host this
	// runs on (lines clawd refused as special-address count too, whichever
	// host wrote them).
	Classify func(netip.Addr) addrclass.Class
}

// Limits on hostile input.
const (
	maxLine        = 1 << 20 // longer audit lines are skipped
	maxKeys        = 50000   // distinct observations kept per container; more are counted as dropped
	maxTotalKeys   = 500000  // distinct observations kept in all
	maxReadPaths   = 8       // distinct first path segments before a read rule goes host-wide (said in a comment)
	maxWritePaths  = 16
	maxSegment     = 64
	maxContainerNm = 128
)

// Rule names the gate decides with itself: clawd's own refusals, never
// something a policy could allow (proxy/gate.go).
var gateRules = map[string]bool{"clawd-internal": true, "special-address": true, "host-mismatch": true, "unframable": true}

var readMethods = map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true}

// target is what a rule names: a host, or a public address.
type target struct {
	host string     // normalised name; "" when ip is set
	ip   netip.Addr // for address-only observations
}

func (t target) String() string {
	if t.host != "" {
		return t.host
	}
	return t.ip.String()
}

type obsKey struct {
	container string
	t         target
	port      uint16
	method    string // "" for a connection without HTTP
	seg       string // first path segment ("" for /)
	https     bool
}

// Collector gathers observations from audit lines.
type Collector struct {
	o       Options
	obs     map[obsKey]*obsVal
	perCont map[string]int  // observations kept per container
	special map[string]bool // names seen at a special destination
	unplain map[string]int  // target -> requests skipped for a path that is not plain (at most maxUnplainTargets)
	// Counters for the report: lines read, decisions used, unreadable
	// lines, observations over a container's cap, requests skipped for a
	// path that is not plain, and requests the author's own deny or
	// approve rules decided (never proposed).
	Lines, Used, Bad, Dropped, Unplain, ByRule int
}

// maxUnplainTargets bounds the targets named in the not-plain report.
const maxUnplainTargets = 100

type obsVal struct {
	count int
	e     audit.Entry // one example, for --diff decisions
	path  string
	ip    netip.Addr
}

// New returns an empty Collector.
func New(o Options) *Collector {
	if o.Classify == nil {
		o.Classify = addrclass.Extra{Host: hostAddrs()}.Classify
	}
	return &Collector{o: o, obs: map[obsKey]*obsVal{}, perCont: map[string]int{}, special: map[string]bool{}, unplain: map[string]int{}}
}

// ParseSince reads a --since value: a Go duration ("24h", "90m") or a
// number of days ("7d").
func ParseSince(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > 3660 {
			return 0, fmt.Errorf("--since %q: want a duration such as 24h or a number of days such as 7d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--since %q: want a duration such as 24h or a number of days such as 7d", s)
	}
	return d, nil
}

// Files lists the audit log at path and its rotated copies (path.1,
// path.2.gz, path-20260101, ...), oldest first, path last.
func Files(path string) ([]string, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	var rotated []string
	for _, pat := range []string{path + ".*", path + "-*"} {
		m, _ := filepath.Glob(pat)
		rotated = append(rotated, m...)
	}
	slices.Sort(rotated)
	rotated = slices.Compact(rotated)
	// Oldest first: logrotate's path.N grows with age.
	sort.SliceStable(rotated, func(i, j int) bool { return rotNum(rotated[i], path) > rotNum(rotated[j], path) })
	return append(rotated, path), nil
}

func rotNum(name, base string) int {
	s := strings.TrimSuffix(strings.TrimPrefix(name, base+"."), ".gz")
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

// ReadFile reads one audit file (gzip-compressed when it ends in .gz).
func (c *Collector) ReadFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	}
	if err := c.Read(r); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Read reads audit JSON lines. Lines that are not JSON audit entries, or
// longer than maxLine, are counted in Bad and skipped.
func (c *Collector) Read(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	long := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !long {
			if len(line)+len(chunk) > maxLine {
				long, line = true, line[:0]
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(chunk) > 0 || len(line) > 0 || long {
			c.Lines++
			if long {
				c.Bad++
			} else if l := bytes.TrimSpace(line); len(l) > 0 {
				c.line(l)
			}
		}
		line, long = line[:0], false
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (c *Collector) line(l []byte) {
	var e audit.Entry
	if err := json.Unmarshal(l, &e); err != nil {
		c.Bad++
		return
	}
	if e.Event != audit.EventDecision {
		return
	}
	if !c.o.Since.IsZero() && e.Time.Before(c.o.Since) {
		return
	}
	if c.o.Container != "" && e.Container != c.o.Container {
		return
	}
	if !validContainer(e.Container) {
		c.Bad++
		return
	}
	dst, err := netip.ParseAddrPort(e.Dst)
	if err != nil || dst.Port() == 0 || dst.Addr().Zone() != "" {
		c.Bad++ // clawd writes no zones: a damaged or edited line
		return
	}
	ip := dst.Addr().Unmap()
	host := hostname.Normalize(e.Host)
	if host == "" {
		host = hostname.Normalize(e.SNI)
	}
	if hostname.IsIP(host) {
		host = "" // the address decides
	}
	if host != "" && !policy.ValidHost(host) {
		c.Bad++ // a rule could not name it as it is
		return
	}
	if gateRules[e.Rule] || c.o.Classify(ip) != addrclass.Public {
		// A name audited at a special destination (or refused by clawd
		// itself) is never proposed, whatever else it was seen at.
		if host != "" {
			c.special[host] = true
		}
		return
	}
	if e.Action == "denied" {
		return // a human approver said no: not proposed
	}
	isWrite := (e.Proto == "http" || e.Proto == "https") && !readMethods[strings.ToUpper(e.Method)]
	if byAuthorRule(e, isWrite) {
		c.ByRule++
		return
	}
	k := obsKey{container: e.Container, port: dst.Port()}
	if host != "" {
		k.t.host = host
	} else {
		k.t.ip = ip
	}
	switch e.Proto {
	case "http", "https":
		m := strings.ToUpper(e.Method)
		if !validMethod(m) {
			c.Bad++
			return
		}
		k.method, k.https = m, e.Proto == "https"
		seg, ok := firstSegment(e.Path)
		if !ok {
			// "/**", "/%2e%2e", "/a b": no prefix rule says what was
			// seen, and widening to the host would grant far more.
			c.Unplain++
			if n := k.t.String(); c.unplain[n] > 0 || len(c.unplain) < maxUnplainTargets {
				c.unplain[n]++
			}
			return
		}
		k.seg = seg
	case "tls", "tcp":
	default:
		return
	}
	v := c.obs[k]
	if v == nil {
		// Each container has its own cap: one agent's junk cannot
		// crowd out the others'.
		if c.perCont[k.container] >= maxKeys || len(c.obs) >= maxTotalKeys {
			c.Dropped++
			return
		}
		c.perCont[k.container]++
		v = &obsVal{e: e, path: e.Path, ip: ip}
		c.obs[k] = v
	}
	v.count++
	c.Used++
}

// firstSegment is the path's first segment when it is plain (letters,
// digits, '-', '_', '.', '~', not "." or ".."), "" for "/"; ok is false
// for a path that is not plain.
func firstSegment(p string) (seg string, ok bool) {
	if !strings.HasPrefix(p, "/") {
		return "", p == "" // "*" (OPTIONS *), absolute forms: not plain
	}
	p = strings.TrimLeft(p, "/")
	seg, _, _ = strings.Cut(p, "/")
	if seg == "" {
		return "", true
	}
	if len(seg) > maxSegment || seg == "." || seg == ".." {
		return "", false
	}
	for i := 0; i < len(seg); i++ {
		ch := seg[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			return "", false
		}
	}
	return seg, true
}

// byAuthorRule reports whether the line's decision (in mode audit the one
// enforcement would have taken) was a refusal or hold by one of the
// author's named rules, not the default action. Such a request is never a
// candidate: proposing it would undo the author's deny, or turn a held
// read into an allow. A held write stays a candidate, since it is
// proposed as approve anyway.
func byAuthorRule(e audit.Entry, isWrite bool) bool {
	if e.Rule == "" || e.Rule == "default" {
		return false
	}
	act := e.Action
	if e.Mode == "audit" && e.Would != "" {
		act = e.Would
	}
	switch act {
	case string(policy.Allow):
		return false
	case string(policy.Approve), "approved":
		return !isWrite
	}
	return true // deny, rate limited, timed out, anything else
}

func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// validContainer accepts names a set's match.name can select literally.
func validContainer(n string) bool {
	n = strings.TrimPrefix(n, "/")
	if n == "" || len(n) > maxContainerNm {
		return false
	}
	for i := 0; i < len(n); i++ {
		ch := n[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false // glob characters, spaces, controls: not matchable literally
		}
	}
	return true
}

// FromLog reads the audit log at path with its rotated copies and
// proposes. The Collector carries the counts for a summary.
func FromLog(path string, o Options) (Result, *Collector, error) {
	files, err := Files(path)
	if err != nil {
		return Result{}, nil, err
	}
	c := New(o)
	for _, f := range files {
		if err := c.ReadFile(f); err != nil {
			return Result{}, c, err
		}
	}
	res, err := c.Propose()
	return res, c, err
}

// hostAddrs lists this host's addresses once; an error listing them makes
// every address the host's (fail closed: nothing is proposed).
func hostAddrs() func(netip.Addr) bool {
	addrs, err := hostaddrs.List()
	if err != nil {
		return func(netip.Addr) bool { return true }
	}
	own := map[netip.Addr]bool{}
	for _, a := range addrs {
		own[a] = true
	}
	return func(a netip.Addr) bool { return own[a.Unmap()] }
}
