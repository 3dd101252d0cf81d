package audit

import (
	"path/filepath"
	"testing"
	"time"
)

// benchEntry is a typical per-request decision line.
func benchEntry() Entry {
	return Entry{
		Time:        time.Date(2026, 11, 25, 23, 1, 54, 123456789, time.UTC),
		Event:       "decision",
		Container:   "bench",
		ContainerID: "4f1c2a9e0b7d4c3e8a6f5b2d1c0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e",
		Runtime:     "containerd",
		Labels:      map[string]string{"app": "agent", "team": "a"},
		Dst:         "198.51.100.66:8080",
		Host:        "bench.test",
		Proto:       "http",
		Method:      "GET",
		Path:        "/v1/messages",
		Rule:        "http",
		Action:      "allow",
		Status:      200,
		BytesIn:     3,
		BytesOut:    0,
		DurationMS:  0.412,
	}
}

// BenchmarkLog appends typical decision lines to a file: one caller, and
// many at once (as the proxy's request goroutines are); chained, and
// chained with a signed checkpoint every DefaultCheckpointEvery lines.
//
//	go test -run '^$' -bench Log -benchmem ./audit/
func BenchmarkLog(b *testing.B) {
	key, _, err := LoadOrCreateKey(filepath.Join(b.TempDir(), "audit-key"))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		par  bool
		opt  Options
	}{{"serial", false, Options{}}, {"parallel", true, Options{}}, {"signed-serial", false, Options{Key: key}}, {"signed-parallel", true, Options{Key: key}}} {
		par := c.par
		b.Run(c.name, func(b *testing.B) {
			l, err := OpenWith(filepath.Join(b.TempDir(), "audit.log"), c.opt)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			e := benchEntry()
			b.ReportAllocs()
			b.ResetTimer()
			if !par {
				for range b.N {
					l.Log(e)
				}
				return
			}
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Log(e)
				}
			})
		})
	}
}
