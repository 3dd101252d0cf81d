package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/proxy/ca"
)

// RuntimeTrust is one runtime found in a container and whether it trusts
// clawd's CA.
type RuntimeTrust = ca.RuntimeTrust

// InspectRequest is the body of POST /v1/inspect.
type InspectRequest struct {
	Container string `json:"container,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	PID       int    `json:"pid,omitempty"`
}

// InspectReport is what `clawd doctor --container` shows.
type InspectReport struct {
	Container string         `json:"container"`
	Runtime   string         `json:"runtime"`
	PID       int            `json:"pid"`
	Attached  bool           `json:"attached"`
	Runtimes  []RuntimeTrust `json:"runtimes"`
}

// maxEnviron bounds how much of a container process's environment is read.
const maxEnviron = 1 << 20

// Inspect finds the runtimes in a container (attached or not) and says
// whether each trusts clawd's CA, judged by the container's files and the
// environment of its first process.
func (d *Daemon) Inspect(ctx context.Context, req InspectRequest) (InspectReport, error) {
	var rep InspectReport
	pid := 0
	if req.PID == 0 && req.Container != "" {
		if a, err := d.find(req.Container, req.Namespace); err == nil {
			rep.Container, rep.Runtime, rep.Attached, pid = a.Container.Name, a.Container.Runtime, true, livePID(a.Record)
		}
	}
	if pid == 0 {
		c, p, err := d.resolve(ctx, AttachRequest{Container: req.Container, Namespace: req.Namespace, PID: req.PID})
		if err != nil {
			return rep, err
		}
		rep.Container, rep.Runtime, pid = c.Name, c.Runtime, p
	}
	rep.PID = pid
	environ, err := readEnviron(pid)
	if err != nil {
		return rep, fmt.Errorf("inspect %s: %w", rep.Container, err)
	}
	if rep.Runtimes, err = ca.Inspect(fmt.Sprintf("/proc/%d/root", pid), d.ca.CertPEM(), environ); err != nil {
		return rep, fmt.Errorf("inspect %s: %w", rep.Container, err)
	}
	return rep, nil
}

func readEnviron(pid int) ([]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEnviron))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range strings.Split(string(b), "\x00") {
		if kv != "" {
			out = append(out, kv)
		}
	}
	return out, nil
}

// RuntimeChecks turns an InspectReport into doctor lines.
func RuntimeChecks(rep InspectReport) []Check {
	var cs []Check
	for _, r := range rep.Runtimes {
		info := r.Info
		if r.Path != "" {
			info = r.Path + ": " + info
		}
		cs = append(cs, Check{Name: r.Runtime, OK: r.Trusts, Info: info, Fix: r.Fix})
	}
	return cs
}

// livePID is a process of r's cgroup: the one attach named while it is
// there (an attachment outlives it: it may have exited, and its number may
// have been reused outside the container), else any in the cgroup or
// below; 0 when none is.
func livePID(r Record) int {
	if in, err := enforce.PIDInCgroup(r.PID, r.Cgroup); err == nil && in {
		return r.PID
	}
	if pids, err := enforce.CgroupProcs(r.Cgroup); err == nil && len(pids) > 0 {
		return pids[0]
	}
	return 0
}
