package daemon

import (
	"os"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "256MiB": 256 << 20, "64 MiB": 64 << 20, "64m": 64 << 20,
		"1GiB": 1 << 30, "2G": 2 << 30, "512KiB": 512 << 10, "10kb": 10 << 10, "7B": 7,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5GiB", "12 parsecs", "99999999999GiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestConfigBufferBudgets(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadConfig(newFlags(t, "--state-dir", dir, "--config", dir+"/none.yaml"))
	if err == nil {
		t.Fatal("explicit missing config accepted")
	}
	c, err = LoadConfig(newFlags(t, "--state-dir", dir))
	if err != nil {
		t.Fatal(err)
	}
	if total, per, err := c.bufferBudgets(); err != nil || total != 256<<20 || per != 64<<20 {
		t.Errorf("defaults: %d %d %v", total, per, err)
	}
	cfg := dir + "/clawd.yaml"
	if err := os.WriteFile(cfg, []byte("max-buffered-bytes: 1GiB\nmax-buffered-bytes-per-container: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = LoadConfig(newFlags(t, "--config", cfg, "--state-dir", dir)); err != nil {
		t.Fatal(err)
	}
	if total, per, err := c.bufferBudgets(); err != nil || total != 1<<30 || per != -1 {
		t.Errorf("from file: %d %d %v (0 must mean unlimited, -1 for the proxy)", total, per, err)
	}
	if c, err = LoadConfig(newFlags(t, "--config", cfg, "--state-dir", dir, "--max-buffered-bytes", "8388608")); err != nil {
		t.Fatal(err)
	}
	if total, _, _ := c.bufferBudgets(); total != 8<<20 {
		t.Errorf("flag over file: %d", total)
	}
	// A YAML number is bytes.
	if err := os.WriteFile(cfg, []byte("max-buffered-bytes: 1048576\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = LoadConfig(newFlags(t, "--config", cfg, "--state-dir", dir)); err != nil {
		t.Fatal(err)
	}
	if total, _, _ := c.bufferBudgets(); total != 1<<20 {
		t.Errorf("YAML number: %d", total)
	}
	if _, err := LoadConfig(newFlags(t, "--state-dir", dir, "--max-buffered-bytes", "lots")); err == nil {
		t.Error("a bad size was accepted")
	}
}

// TestProgramHashMaxConfig: the executable hash cap (policy binaries:)
// defaults to 512 MiB, takes a size, and refuses 0 or garbage.
func TestProgramHashMaxConfig(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadConfig(newFlags(t, "--state-dir", dir))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.programHashMax(); err != nil || n != 512<<20 {
		t.Errorf("default: %d %v", n, err)
	}
	if c, err = LoadConfig(newFlags(t, "--state-dir", dir, "--max-program-hash-bytes", "64MiB")); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.programHashMax(); n != 64<<20 {
		t.Errorf("64MiB: %d", n)
	}
	for _, bad := range []string{"0", "lots"} {
		if _, err := LoadConfig(newFlags(t, "--state-dir", dir, "--max-program-hash-bytes", bad)); err == nil || !strings.Contains(err.Error(), "max-program-hash-bytes") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
