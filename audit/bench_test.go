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
// many at once (as the proxy's request goroutines are).
//
//	go test -run '^$' -bench Log -benchmem ./audit/
func BenchmarkLog(b *testing.B) {
	for _, par := range []bool{false, true} {
		name := "serial"
		if par {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "audit.log"))
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
