// Package otlp exports audit lines as OpenTelemetry logs over OTLP, next
// to the JSONL file, with the official Go SDK (sdk/log's batch processor,
// the otlploghttp or otlploggrpc exporter).
//
// Export never slows a decision: the audit Logger hands each written line
// to Tee, which only copies it into a bounded queue (dropping, and counting,
// when it is full); a goroutine turns lines into log records for the SDK's
// batch processor, whose own bounded queue absorbs a slow or absent
// collector. The JSONL file is written first and loses nothing to export.
//
// Each record's body is the exact JSON line (so that `clawd audit verify`
// can check a copy rebuilt from the collector's), its attributes every
// field of the line as clawd.<field> (generic over audit.Entry's fields:
// container, container_id, rule, action, program, by, seq, prev, ...),
// its event name clawd.<event>, its severity from the action.
package otlp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// Protocols.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// Config says where and how to export. The zero Timeout, QueueSize and
// Protocol mean the defaults below.
type Config struct {
	// Endpoint is the collector: a URL (http://host:4318, https://…/v1/logs
	// for http/protobuf; the URL's scheme decides TLS) or host:port (gRPC,
	// TLS unless Insecure).
	Endpoint string
	Protocol string            // ProtocolHTTP (default) or ProtocolGRPC
	Headers  map[string]string // sent with every export (credentials): never logged
	Insecure bool              // gRPC without TLS
	CAFile   string            // roots for the collector's certificate (default: the system's)
	Timeout  time.Duration     // one export (default 10s)
	// QueueSize bounds the lines waiting for export, and the SDK's queue
	// (default 4096): past it lines are dropped from export and counted.
	QueueSize int
	// QueueBytes bounds the bytes of the lines waiting for export in both
	// queues (default DefaultQueueBytes): long lines cannot make the
	// queues' memory grow past it.
	QueueBytes int
	// BatchBytes bounds one export request's lines (default
	// DefaultBatchBytes, under the Collector's 4 MiB gRPC message limit):
	// a batch of long lines is sent in parts, so that no request is
	// refused for its size and takes short lines down with it.
	BatchBytes int
	// Resource attributes; service.name, service.version (Version) and
	// host.name (HostName) are set unless given here.
	Resource map[string]string
	Version  string
	HostName string
	// BatchInterval is how long records wait for a batch (default 1s).
	BatchInterval time.Duration
	// CursorFile keeps the delivery cursor across restarts (see
	// delivery.go); "" none: a restart forgets what was not exported.
	CursorFile string
}

const (
	DefaultTimeout    = 10 * time.Second
	DefaultQueueSize  = 4096
	DefaultQueueBytes = 32 << 20
	DefaultBatchBytes = 1 << 20
	// MaxRecordBytes bounds one record's body: a line is exported whole
	// up to it (so that a copy rebuilt from the collector verifies; the
	// proxy's request-head limits keep audit lines below it), a longer one
	// cut to it at a character boundary, with clawd.truncated,
	// clawd.line_bytes and clawd.line_sha256 saying so (the JSONL file has
	// it whole).
	MaxRecordBytes = 1 << 20
	// LongLineBytes: the string attributes of a line longer than this are
	// cut to maxAttrBytes (the body has the line).
	LongLineBytes = 64 << 10
)

// Exporter is a running export. Tee is its audit.Options.Tee.
type Exporter struct {
	secrets           []string // header values, cut out of logged errors
	loopCtx           context.Context
	stopLoop          context.CancelFunc
	dv                *delivery
	exp               *counting
	timeout           time.Duration
	wake              chan struct{}
	stopDeliver       chan struct{}
	delivered         chan struct{}
	queue             chan []byte
	qmu               sync.Mutex
	qlines, maxLines  int   // lines in queue or the SDK's, not yet exported
	qbytes, maxQueued int64 // and their bytes
	provider          *sdklog.LoggerProvider
	logger            log.Logger
	done              chan struct{}
	mu                sync.RWMutex // Close against Tee
	closed            bool
	dropped           atomic.Uint64 // lines the queue had no room for
	exported          atomic.Uint64
	failed            atomic.Uint64
	log               *zap.Logger
	limit             *rate.Limiter // of failure log lines
	dropLimit         *rate.Limiter // of drop log lines
}

// New starts an exporter; it does not contact the collector (a down
// collector is a counted export failure, not a startup error).
func New(cfg Config, reg prometheus.Registerer, lg *zap.Logger) (*Exporter, error) {
	e, err := newStopped(cfg, reg, lg)
	if err != nil {
		return nil, err
	}
	go e.run()
	return e, nil
}

// newStopped is New without the goroutine that empties the queue.
func newStopped(cfg Config, reg prometheus.Registerer, lg *zap.Logger) (*Exporter, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.BatchInterval <= 0 {
		cfg.BatchInterval = time.Second
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	e := &Exporter{secrets: secretsOf(cfg.Headers), dv: newDelivery(cfg.CursorFile), timeout: cfg.Timeout, wake: make(chan struct{}, 1), stopDeliver: make(chan struct{}), delivered: make(chan struct{}),
		queue: make(chan []byte, cfg.QueueSize), maxLines: cfg.QueueSize, maxQueued: int64(cfg.QueueBytes), done: make(chan struct{}), log: lg, limit: rate.NewLimiter(rate.Every(time.Minute), 3), dropLimit: rate.NewLimiter(rate.Every(time.Minute), 1)}
	exp, err := newExporter(cfg)
	if err != nil {
		return nil, err
	}
	var attrs []attribute.KeyValue
	def := map[string]string{"service.name": "clawd", "service.version": cfg.Version, "host.name": cfg.HostName}
	for k, v := range def {
		if _, set := cfg.Resource[k]; !set && v != "" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	for k, v := range cfg.Resource {
		attrs = append(attrs, attribute.String(k, v))
	}
	res := resource.NewSchemaless(attrs...)
	e.exp = &counting{Exporter: exp, e: e, batchBytes: cfg.BatchBytes}
	e.loopCtx, e.stopLoop = context.WithCancel(context.Background())
	proc := sdklog.NewBatchProcessor(e.exp,
		sdklog.WithMaxQueueSize(cfg.QueueSize), sdklog.WithExportTimeout(cfg.Timeout), sdklog.WithExportInterval(cfg.BatchInterval))
	e.provider = sdklog.NewLoggerProvider(sdklog.WithProcessor(proc), sdklog.WithResource(res))
	e.logger = e.provider.Logger("github.com/clawd-dev/clawd/audit")
	hookSDK(lg, e.scrub)
	if err := registerMetrics(reg, e); err != nil {
		return nil, err
	}
	go e.deliver()
	return e, nil
}

// CheckEndpoint refuses an endpoint with credentials in it (user:pass@,
// with or without a scheme) or with a query or fragment (the SDK drops
// them without a word): endpoints are logged and shown, credentials belong
// in headers.
func CheckEndpoint(endpoint string) error {
	rest := endpoint
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	host := rest
	if j := strings.IndexAny(host, "/?#"); j >= 0 {
		host = host[:j]
	}
	switch {
	case strings.Contains(host, "@"):
		return fmt.Errorf("audit otlp endpoint %s: credentials in the endpoint (user:password@) are refused: endpoints are logged; send them in headers", Redact(endpoint))
	case strings.ContainsAny(rest, "?#"):
		return fmt.Errorf("audit otlp endpoint %s: a query or fragment is refused (the exporter would drop it): send credentials in headers", Redact(endpoint))
	}
	return nil
}

// Redact is endpoint fit to log: without userinfo, query or fragment.
func Redact(endpoint string) string {
	scheme, rest, ok := strings.Cut(endpoint, "://")
	if !ok {
		scheme, rest = "", endpoint
	}
	hostpath := rest
	if j := strings.IndexAny(hostpath, "?#"); j >= 0 {
		hostpath = hostpath[:j] + "?…"
	}
	host, path := hostpath, ""
	if j := strings.IndexByte(hostpath, '/'); j >= 0 {
		host, path = hostpath[:j], hostpath[j:]
	}
	if j := strings.LastIndexByte(host, '@'); j >= 0 {
		host = "…@" + host[j+1:]
	}
	if ok {
		return scheme + "://" + host + path
	}
	return host + path
}

func newExporter(cfg Config) (sdklog.Exporter, error) {
	if err := CheckEndpoint(cfg.Endpoint); err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("audit otlp ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("audit otlp ca-file %s: no PEM certificate in it", cfg.CAFile)
		}
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	ctx := context.Background()
	switch cfg.Protocol {
	case "", ProtocolHTTP:
		if !strings.HasPrefix(cfg.Endpoint, "http://") && !strings.HasPrefix(cfg.Endpoint, "https://") {
			return nil, fmt.Errorf("audit otlp endpoint %q: want an http:// or https:// URL for %s", Redact(cfg.Endpoint), ProtocolHTTP)
		}
		opts := []otlploghttp.Option{otlploghttp.WithEndpointURL(cfg.Endpoint), otlploghttp.WithTimeout(cfg.Timeout)}
		if u := strings.TrimPrefix(strings.TrimPrefix(cfg.Endpoint, "https://"), "http://"); !strings.Contains(u, "/") {
			opts = append(opts, otlploghttp.WithURLPath("/v1/logs"))
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlploghttp.WithHeaders(cfg.Headers))
		}
		if tlsCfg != nil {
			opts = append(opts, otlploghttp.WithTLSClientConfig(tlsCfg))
		}
		return otlploghttp.New(ctx, opts...)
	case ProtocolGRPC:
		if cfg.Endpoint == "" {
			return nil, errors.New("audit otlp endpoint: want host:port for grpc")
		}
		opts := []otlploggrpc.Option{otlploggrpc.WithTimeout(cfg.Timeout)}
		if strings.Contains(cfg.Endpoint, "://") {
			opts = append(opts, otlploggrpc.WithEndpointURL(cfg.Endpoint))
		} else {
			opts = append(opts, otlploggrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlploggrpc.WithInsecure())
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlploggrpc.WithHeaders(cfg.Headers))
		}
		if tlsCfg != nil {
			opts = append(opts, otlploggrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		return otlploggrpc.New(ctx, opts...)
	}
	return nil, fmt.Errorf("audit otlp protocol %q: want %s or %s", cfg.Protocol, ProtocolHTTP, ProtocolGRPC)
}

// Tee queues a copy of an audit line for export; it never blocks.
func (e *Exporter) Tee(line []byte) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return
	}
	n := int64(len(line)) // held whole until run makes it a record
	seq := lineSeq(line)
	if !e.reserve(n) {
		e.dv.dropped(seq)
		e.drop()
		return
	}
	select {
	case e.queue <- bytes.Clone(line):
		e.dv.queued(seq)
	default:
		e.release(n)
		e.dv.dropped(seq)
		e.drop()
	}
}

// drop counts a line export had no room for.
func (e *Exporter) drop() {
	e.dropped.Add(1)
	if e.dropLimit.Allow() {
		e.log.Warn("audit export queue full: lines dropped from export (the JSONL file has them)", zap.Uint64("dropped_total", e.dropped.Load()))
	}
}

// reserve takes room for a line of n bytes in the queues: from Tee until
// its record's export ended (release), so that together the two queues
// hold at most QueueSize lines (the SDK's queue never drops) and
// QueueBytes bytes.
func (e *Exporter) reserve(n int64) bool {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	if e.qlines >= e.maxLines || e.qbytes+n > e.maxQueued {
		return false
	}
	e.qlines++
	e.qbytes += n
	return true
}

func (e *Exporter) release(n int64) {
	e.qmu.Lock()
	e.qlines--
	e.qbytes -= n
	e.qmu.Unlock()
}

// recordBytes is what a record holds of the queues (see reserve): its
// body, the line (the attributes mirror its fields, and are cut for long
// lines).
func recordBytes(r interface{ Body() attribute.Value }) int64 {
	return int64(len(r.Body().AsString()))
}

func (e *Exporter) run() {
	defer close(e.done)
	ctx := context.Background()
	for line := range e.queue {
		var r log.Record
		ok := Record(line, &r)
		e.release(int64(len(line)))
		if !ok {
			e.dv.unqueued(lineSeq(line))
			continue
		}
		// Held now as the record, until its export ended (release in
		// counting.export); past the bound the record is dropped (and read
		// back from the file later, with Resume).
		if !e.reserve(recordBytes(&r)) {
			e.dv.forget(lineSeq(line))
			e.drop()
			continue
		}
		e.logger.Emit(ctx, r)
	}
}

// Close exports what is queued (within ctx) and stops.
func (e *Exporter) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.queue)
	e.mu.Unlock()
	select {
	case <-e.done:
	case <-ctx.Done():
	}
	e.provider.ForceFlush(ctx)
	e.stopLoop()
	close(e.stopDeliver)
	<-e.delivered
	// What the collector refused, and lines the queues missed: again
	// while ctx lasts and the collector takes them.
	for ctx.Err() == nil && (e.dv.retrying() || e.dv.hasLog() && len(e.dv.gaps(1)) > 0) {
		before := e.dv.cursorNow()
		if e.retryOnce(ctx) {
			e.fillGaps()
			e.provider.ForceFlush(ctx)
		}
		if e.dv.cursorNow() == before {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	e.dv.save()
	return e.provider.Shutdown(ctx)
}

// Record fills r from an audit line; false if the line is no JSON object.
func Record(line []byte, r *log.Record) bool {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return false
	}
	if len(line) > MaxRecordBytes {
		sum := sha256.Sum256(line)
		cut := MaxRecordBytes
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		r.SetBody(attribute.StringValue(strings.ToValidUTF8(string(line[:cut]), "\uFFFD")))
		r.AddAttributes(attribute.Bool("clawd.truncated", true), attribute.Int("clawd.line_bytes", len(line)),
			attribute.String("clawd.line_sha256", hex.EncodeToString(sum[:])))
	} else {
		r.SetBody(attribute.StringValue(string(line)))
	}
	r.SetObservedTimestamp(time.Now())
	if s, ok := m["time"].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			r.SetTimestamp(t)
		}
	}
	event, _ := m["event"].(string)
	action, _ := m["action"].(string)
	r.SetEventName("clawd." + event)
	sev, text := severity(event, action)
	r.SetSeverity(sev)
	r.SetSeverityText(text)
	attrs := make([]attribute.KeyValue, 0, len(m))
	for k, v := range m {
		if k == "time" {
			continue
		}
		v := value(v)
		if len(line) > LongLineBytes {
			v = capValue(v, maxAttrBytes)
		}
		attrs = append(attrs, attribute.KeyValue{Key: attribute.Key("clawd." + k), Value: v})
	}
	r.AddAttributes(attrs...)
	return true
}

func value(v any) attribute.Value {
	switch v := v.(type) {
	case string:
		return attribute.StringValue(v)
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return attribute.Int64Value(i)
		}
		f, _ := v.Float64()
		return attribute.Float64Value(f)
	case bool:
		return attribute.BoolValue(v)
	case map[string]any:
		kvs := make([]attribute.KeyValue, 0, len(v))
		for k, x := range v {
			kvs = append(kvs, attribute.KeyValue{Key: attribute.Key(k), Value: value(x)})
		}
		return attribute.MapValue(kvs...)
	case []any:
		vs := make([]attribute.Value, len(v))
		for i, x := range v {
			vs[i] = value(x)
		}
		return attribute.SliceValue(vs...)
	}
	return attribute.Value{}
}

// severity: what clawd refused or lost is a warning (error for
// exfiltration and lost audit lines), the rest info.
func severity(event, action string) (log.Severity, string) {
	switch event {
	case "exfiltration", "audit_lost":
		return log.SeverityError, "ERROR"
	case "tls_untrusted", "cut_off", "audit_torn":
		return log.SeverityWarn, "WARN"
	}
	switch action {
	case "deny", "denied", "expired", "aborted", "revoked", "freeze", "kill":
		return log.SeverityWarn, "WARN"
	}
	return log.SeverityInfo, "INFO"
}

// counting sends each batch in parts of at most batchBytes, and counts
// what the SDK's exporter did with each part.
type counting struct {
	sdklog.Exporter
	e          *Exporter
	batchBytes int
}

func (c *counting) Export(ctx context.Context, records []sdklog.Record) error {
	var errs []error
	for len(records) > 0 {
		n, size := 0, 0
		for n < len(records) {
			// The body and the attributes that mirror its fields.
			size += 2*len(records[n].Body().AsString()) + 256
			if n > 0 && size > c.batchBytes {
				break
			}
			n++
		}
		if err := c.export(ctx, records[:n], true); err != nil {
			errs = append(errs, err)
		}
		records = records[n:]
	}
	return errors.Join(errs...)
}

// export sends one part. Sent, its records leave the queues; one the
// collector refuses for its size is sent in halves (a record it cannot
// take alone is given up: the file has it); otherwise refused, the part
// keeps its room and, from the SDK (keep), waits for delivery's retry.
func (c *counting) export(ctx context.Context, records []sdklog.Record, keep bool) error {
	err := c.Exporter.Export(ctx, records)
	if err != nil && partial(err) {
		c.e.warn("audit export: the collector refused some records of a request it took", err, len(records))
		c.e.exported.Add(uint64(len(records)))
		c.e.finished(records)
		return nil
	}
	if err != nil && len(records) > 1 && tooLarge(err) {
		h := len(records) / 2
		return errors.Join(c.export(ctx, records[:h], keep), c.export(ctx, records[h:], keep))
	}
	if err != nil {
		if keep {
			c.e.failed.Add(uint64(len(records))) // the first refusal of these records (retries are not counted again)
		}
		c.e.warn("audit export to the OTLP collector failed (the JSONL file has every line; the export is tried again)", err, len(records))
		if tooLarge(err) {
			c.e.finished(records) // one record the collector will never take
			return err
		}
		if keep {
			part := make([]sdklog.Record, len(records))
			for i := range records {
				part[i] = records[i].Clone()
			}
			c.e.dv.keep(part)
		}
		return err
	}
	c.e.exported.Add(uint64(len(records)))
	c.e.finished(records)
	if c.e.dv.retrying() {
		c.e.kick() // the collector answers again
	}
	return nil
}

// warn logs an export error (rate-limited) with the configured header
// values cut out of it: a collector may echo a refused credential.
func (e *Exporter) warn(msg string, err error, records int) {
	if e.limit.Allow() {
		e.log.Warn(msg, zap.Int("records", records), zap.String("error", e.scrub(err.Error())))
	}
}

// scrub removes the header values (and their words of 8 bytes or more)
// from s.
func (e *Exporter) scrub(s string) string {
	for _, v := range e.secrets {
		s = strings.ReplaceAll(s, v, "[redacted]")
	}
	return s
}

// secretsOf lists what scrub removes, longest first.
func secretsOf(headers map[string]string) []string {
	var out []string
	add := func(v string) {
		for _, w := range append([]string{v}, strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '=' || r == ':' })...) {
			if len(w) < 8 && w != v {
				continue
			}
			j, _ := json.Marshal(w)
			// As a collector may echo it: as is, URL-encoded, JSON-escaped
			// (with "/" escaped too).
			out = append(out, w, url.QueryEscape(w), url.PathEscape(w), strings.Trim(string(j), `"`), strings.ReplaceAll(strings.Trim(string(j), `"`), "/", `\/`))
		}
	}
	for _, v := range headers {
		add(v)
		// Basic credentials: also as the collector decodes them.
		if b64, ok := strings.CutPrefix(v, "Basic "); ok {
			if dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64)); err == nil {
				add(string(dec))
				if _, pw, ok := strings.Cut(string(dec), ":"); ok && pw != "" {
					add(pw)
				}
			}
		}
	}
	out = slices.DeleteFunc(out, func(s string) bool { return s == "" })
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// finished: records left the queues.
func (e *Exporter) finished(records []sdklog.Record) {
	for i := range records {
		e.release(recordBytes(&records[i]))
		e.dv.exported(recordSeq(&records[i]))
	}
}

// tooLarge reports whether the collector refused a request for its size:
// HTTP status 413 (as the exporter words it: "failed to send logs to URL:
// 413 ..."), gRPC RESOURCE_EXHAUSTED or the message-size refusal. Never a
// "413" elsewhere in the text (a port, a body).
func tooLarge(err error) bool {
	if status.Code(err) == codes.ResourceExhausted {
		return true
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus().Code() == codes.ResourceExhausted {
		return true
	}
	return http413.MatchString(err.Error())
}

var http413 = regexp.MustCompile(`^failed to send logs to \S+: 413 `)

// partial reports a partial success: the collector took the request and
// refused some records in it (not sent again: a retry would duplicate the
// others).
func partial(err error) bool { return strings.Contains(err.Error(), "OTLP partial success:") }

// maxAttrBytes bounds a string attribute of a record cut to MaxRecordBytes.
const maxAttrBytes = 4 << 10

// capValue cuts the strings in v to max bytes.
func capValue(v attribute.Value, max int) attribute.Value {
	switch v.Type() {
	case attribute.STRING:
		if s := v.AsString(); len(s) > max {
			return attribute.StringValue(strings.ToValidUTF8(s[:max], "") + "…")
		}
	case attribute.MAP:
		kvs := v.AsMap()
		for i := range kvs {
			kvs[i].Value = capValue(kvs[i].Value, max)
		}
		return attribute.MapValue(kvs...)
	case attribute.SLICE:
		vs := v.AsSlice()
		for i := range vs {
			vs[i] = capValue(vs[i], max)
		}
		return attribute.SliceValue(vs...)
	}
	return v
}

// The SDK reports records its batch queue dropped through otel's global
// logger ("dropped log records", dropped=N) and export errors through the
// global error handler: both are process-wide, hooked once.
var (
	hookOnce   sync.Once
	sdkDropped atomic.Uint64
	hookLog    atomic.Pointer[zap.Logger]
	hookScrub  atomic.Pointer[func(string) string]
	hookLimit  = rate.NewLimiter(rate.Every(time.Minute), 3)
)

func hookSDK(lg *zap.Logger, scrub func(string) string) {
	hookLog.Store(lg)
	hookScrub.Store(&scrub)
	hookOnce.Do(func() {
		otel.SetLogger(logr.New(dropSink{}))
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			if hookLimit.Allow() {
				msg := err.Error()
				if sc := hookScrub.Load(); sc != nil {
					msg = (*sc)(msg)
				}
				hookLog.Load().Warn("opentelemetry", zap.String("error", msg))
			}
		}))
	})
}

type dropSink struct{}

func (dropSink) Init(logr.RuntimeInfo)            {}
func (dropSink) Enabled(level int) bool           { return level <= 1 }
func (dropSink) Error(error, string, ...any)      {}
func (d dropSink) WithValues(...any) logr.LogSink { return d }
func (d dropSink) WithName(string) logr.LogSink   { return d }
func (dropSink) Info(_ int, msg string, kv ...any) {
	if msg != "dropped log records" {
		return
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "dropped" {
			switch n := kv[i+1].(type) {
			case uint64:
				sdkDropped.Add(n)
			case int:
				sdkDropped.Add(uint64(n))
			}
		}
	}
}

func registerMetrics(reg prometheus.Registerer, e *Exporter) error {
	if reg == nil {
		return nil
	}
	for result, f := range map[string]func() float64{
		"exported": func() float64 { return float64(e.exported.Load()) },
		"failed":   func() float64 { return float64(e.failed.Load()) },
		"dropped":  func() float64 { return float64(e.dropped.Load() + sdkDropped.Load()) },
	} {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "clawd_audit_export_records_total",
			Help:        "Audit lines by what OTLP export did with them: exported, failed (the collector refused or was unreachable), dropped (the export queue was full).",
			ConstLabels: prometheus.Labels{"result": result},
		}, f)
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("audit export metrics: %w", err)
		}
	}
	return nil
}
