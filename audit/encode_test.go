package audit

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The fast encoder must write exactly what json.Marshal writes.
func checkEncode(t *testing.T, e Entry) {
	t.Helper()
	want, werr := marshalEntry(nil, e)
	got, ok := appendEntry(nil, &e)
	if !ok {
		if werr == nil {
			t.Fatalf("appendEntry refused an entry json.Marshal encodes: %s", want)
		}
		return
	}
	if werr != nil {
		t.Fatalf("appendEntry encoded an entry json.Marshal refuses (%v): %s", werr, got)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("appendEntry differs from json.Marshal:\n got %s\nwant %s", got, want)
	}
}

var tricky = []string{
	"", "a", "plain text", `quote " and \ backslash`, "<script>&amp;</script>",
	"\x00\x01\x07\b\t\n\v\f\r\x1b\x1f\x7f", "héllo wörld", "日本語", "emoji 🦀",
	"\u2028line\u2029para", "bad \xff\xfe utf8", "trunc \xe6\x97", "\xed\xa0\x80 surrogate",
	"/v1/messages", "198.51.100.66:8080", "[2001:db8::1]:443", strings.Repeat("x", 300),
}

func TestEncodeMatchesMarshal(t *testing.T) {
	checkEncode(t, Entry{})
	checkEncode(t, benchEntry())
	for _, s := range tricky {
		checkEncode(t, Entry{Event: s, Path: s, Reason: s, Labels: map[string]string{s: s, "k": s}})
		checkEncode(t, Entry{Tool: s, Rule: s})
	}
	for _, d := range []float64{0, 1, -1, 0.001, 0.412, 1e-6, 9.99e-7, 1e-7, 1.5e-12, 1e20, 1e21, 1.7e308, -2.5e-9, 123456.789, math.SmallestNonzeroFloat64,
		math.NaN(), math.Inf(1), math.Inf(-1)} {
		checkEncode(t, Entry{DurationMS: d})
	}
	for _, tm := range []time.Time{
		time.Time{},
		time.Now(),
		time.Now().UTC(),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 100, time.FixedZone("x", 5*3600+30*60)),
		time.Date(2026, 1, 2, 3, 4, 5, 1, time.FixedZone("x", -(23*3600+59*60))),
		time.Date(2026, 1, 2, 3, 4, 5, 1, time.FixedZone("x", 24*3600)),
		time.Date(2026, 1, 2, 3, 4, 5, 1, time.FixedZone("x", -25*3600)),
		time.Date(2026, 1, 2, 3, 4, 5, 1, time.FixedZone("x", 30)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		checkEncode(t, Entry{Time: tm, Event: "x"})
	}
	big := map[string]string{}
	for i := range 40 {
		big[strings.Repeat("k", 40-i)+string(rune('a'+i%26))] = "v"
	}
	checkEncode(t, Entry{Labels: big})
	checkEncode(t, Entry{Labels: map[string]string{}})
	checkEncode(t, Entry{Program: "/usr/bin/git", ProgramSHA256: "ab", Cmdline: "git push \x00\u2028\"", PID: 4294967295})
	checkEncode(t, Entry{Status: -1, BytesIn: math.MinInt64, BytesOut: math.MaxInt64})

	// Every field, set by reflection: a field added to Entry later that the
	// encoder does not write fails here.
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		var e Entry
		fill(t, r, reflect.ValueOf(&e).Elem())
		checkEncode(t, e)
	}
}

func randString(r *rand.Rand) string {
	switch r.IntN(4) {
	case 0:
		return ""
	case 1:
		return tricky[r.IntN(len(tricky))]
	}
	var sb strings.Builder
	for range r.IntN(12) {
		switch r.IntN(4) {
		case 0:
			sb.WriteByte(byte(r.IntN(256)))
		case 1:
			sb.WriteRune(rune(r.IntN(0x11000)))
		default:
			sb.WriteByte(byte(0x20 + r.IntN(0x60)))
		}
	}
	return sb.String()
}

func fill(t *testing.T, r *rand.Rand, v reflect.Value) {
	for i := range v.NumField() {
		f := v.Field(i)
		if r.IntN(5) == 0 {
			continue // zero value: omitempty
		}
		switch f.Interface().(type) {
		case string:
			f.SetString(randString(r))
		case int, int64:
			f.SetInt(r.Int64N(1<<40) - 1<<39)
		case uint32: // ident: PID
			f.SetUint(uint64(r.Uint32()))
		case bool: // chain: FileStart
			f.SetBool(true)
		case float64:
			f.SetFloat(math.Float64frombits(r.Uint64())*[]float64{1, 0}[r.IntN(2)] + r.NormFloat64()*math.Pow(10, float64(r.IntN(40)-20)))
		case time.Time:
			f.Set(reflect.ValueOf(time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)).In(time.FixedZone("z", r.IntN(200000)-100000))))
		case map[string]string:
			m := map[string]string{}
			for range r.IntN(6) {
				m[randString(r)] = randString(r)
			}
			f.Set(reflect.ValueOf(m))
		default:
			t.Fatalf("Entry.%s has type %s, which appendEntry and this test do not know", v.Type().Field(i).Name, f.Type())
		}
	}
}

func TestEncodeAllocatesNothing(t *testing.T) {
	e := benchEntry()
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { appendEntry(buf[:0], &e) }); n != 0 {
		t.Errorf("appendEntry allocates %v times per entry", n)
	}
}
