// Command otelcol is a minimal OpenTelemetry Collector for the e2e tests:
// the upstream OTLP receiver (gRPC and HTTP) and one exporter of its own,
// "jsonlines", that appends each batch of logs it receives to a file as one
// line of OTLP JSON (plog.JSONMarshaler). It is its own module so that the
// collector's dependencies stay out of clawd's.
package main

import (
	"context"
	"errors"
	"os"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

type jsonConfig struct {
	Path string `mapstructure:"path"`
}

type jsonExporter struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (e *jsonExporter) Start(context.Context, component.Host) error {
	f, err := os.OpenFile(e.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	e.f = f
	return err
}

func (e *jsonExporter) Shutdown(context.Context) error {
	if e.f == nil {
		return nil
	}
	return e.f.Close()
}

func (e *jsonExporter) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (e *jsonExporter) ConsumeLogs(_ context.Context, ld plog.Logs) error {
	b, err := (&plog.JSONMarshaler{}).MarshalLogs(ld)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, err = e.f.Write(append(b, '\n'))
	return err
}

func jsonFactory() exporter.Factory {
	return exporter.NewFactory(component.MustNewType("jsonlines"),
		func() component.Config { return &jsonConfig{} },
		exporter.WithLogs(func(_ context.Context, _ exporter.Settings, cfg component.Config) (exporter.Logs, error) {
			c := cfg.(*jsonConfig)
			if c.Path == "" {
				return nil, errors.New("jsonlines: path is required")
			}
			return &jsonExporter{path: c.Path}, nil
		}, component.StabilityLevelDevelopment))
}

func components() (otelcol.Factories, error) {
	var f otelcol.Factories
	var err error
	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return f, err
	}
	f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](jsonFactory())
	f.Telemetry = otelconftelemetry.NewFactory()
	return f, err
}

func main() {
	info := component.BuildInfo{Command: "otelcol", Description: "clawd e2e collector", Version: "e2e"}
	set := otelcol.CollectorSettings{BuildInfo: info, Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{ResolverSettings: confmap.ResolverSettings{
			ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory()}, DefaultScheme: "file"}}}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		os.Exit(1)
	}
}
