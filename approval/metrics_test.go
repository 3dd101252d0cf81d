package approval

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) { c.Registerer = reg; c.MaxPendingPerContainer = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := async(e.m, ctx, hold("a", "PUT", "/repos/o/r/pulls/1/merge"))
	id := waitPending(t, e.m, 1)[0].ID
	e.m.Request(ctx, hold("a", "PUT", "/repos/o/r/pulls/2/merge")) // limit
	decideCompat(e.m, id, true, "cli", "", 0)
	recv(t, ch)

	want := map[string]float64{
		"clawd_approvals_pending":                       0,
		"clawd_approval_holds":                          0,
		"clawd_approval_requests_total/result=held":     1,
		"clawd_approval_requests_total/result=limit":    1,
		"clawd_approvals_decided_total/status=approved": 1,
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			k := mf.GetName()
			for _, l := range m.Label {
				k += "/" + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[k] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[k] = m.Gauge.GetValue()
			}
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	// A second manager on the same registry fails clearly instead of panicking.
	if _, err := New(Config{DBPath: t.TempDir() + "/db", Registerer: reg}); err == nil {
		t.Error("duplicate registration accepted")
	}
}
