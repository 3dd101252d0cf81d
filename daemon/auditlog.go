package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/audit/otlp"
)

// openAudit opens the chained audit log with its checkpoint key and, with
// audit-otlp, its OTLP export.
func (d *Daemon) openAudit() error {
	key, fixed, err := audit.LoadOrCreateKey(d.cfg.AuditKey)
	if err != nil {
		return err
	}
	if fixed != "" {
		d.log.Warn("audit public key", zap.String("fixed", fixed))
	}
	opt := audit.Options{Key: key, CheckpointEvery: d.cfg.AuditCheckpointEvery, CheckpointInterval: d.cfg.AuditCheckpointInterval,
		HeadFile: filepath.Join(d.cfg.StateDir, "audit.head")}
	if opt.CheckpointInterval == 0 {
		opt.CheckpointInterval = -1
	}
	if c := d.cfg.AuditOTLP; c != nil {
		host, _ := os.Hostname()
		oc, err := c.otlpConfig(Version, host)
		if err != nil {
			return err
		}
		oc.CursorFile = filepath.Join(d.cfg.StateDir, "audit-export.cursor")
		if d.auditExp, err = otlp.New(oc, d.reg, d.log.Named("audit-export")); err != nil {
			return fmt.Errorf("audit-otlp: %w", err)
		}
		opt.Tee = d.auditExp.Tee
		// The endpoint only: headers hold credentials.
		d.log.Info("exporting audit lines over OTLP", zap.String("endpoint", otlp.Redact(oc.Endpoint)), zap.String("protocol", oc.Protocol))
	}
	if d.audit, err = audit.OpenWith(d.cfg.AuditLog, opt); err != nil {
		return err
	}
	d.audit.OnError = func(err error) { d.log.Error("audit log write failed", zap.Error(err)) }
	if d.auditExp != nil {
		// Lines an earlier run did not export (a crash, an outage) are read
		// back from the file.
		seq, _ := d.audit.Head()
		d.auditExp.Resume(d.cfg.AuditLog, seq)
	}
	return nil
}

// closeAuditExport sends what is queued for export (bounded) and stops it;
// after the audit log's Close, so its last checkpoint goes along.
func (d *Daemon) closeAuditExport() {
	if d.auditExp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.auditExp.Close(ctx); err != nil {
		d.log.Warn("audit export: not everything queued was sent", zap.Error(err))
	}
}
