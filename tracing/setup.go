package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The exporters Setup knows.
const (
	ExporterNone   = "none"
	ExporterStdout = "stdout"
	ExporterOTLP   = "otlp"
)

// Config chooses where spans go.
type Config struct {
	// Exporter is none (the default: no spans), stdout (JSON lines on
	// Writer), or otlp (OTLP over HTTP).
	Exporter string
	// Endpoint is the OTLP/HTTP endpoint: a base URL such as
	// http://localhost:4318 (spans go to its /v1/traces) or a full URL with a
	// path; empty uses OTEL_EXPORTER_OTLP_ENDPOINT or the exporter's default.
	Endpoint string
	// ServiceName is the resource's service.name.
	ServiceName string
	// Writer receives the stdout exporter's spans (default os.Stdout).
	Writer io.Writer
}

// ConfigFromEnv reads the OpenTelemetry environment conventions:
// OTEL_TRACES_EXPORTER (otlp, stdout or console, none) and, when it is unset,
// otlp if OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// set; OTEL_SERVICE_NAME overrides service.
func ConfigFromEnv(service string) Config {
	c := Config{ServiceName: service, Exporter: strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER"))}
	if n := os.Getenv("OTEL_SERVICE_NAME"); n != "" {
		c.ServiceName = n
	}
	if c.Exporter == "" && (os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "") {
		c.Exporter = ExporterOTLP
	}
	return c
}

// ErrUnknownExporter is returned by Setup for an exporter it does not know.
var ErrUnknownExporter = errors.New("herald/tracing: unknown exporter")

// Setup builds the tracer provider cfg asks for and the function that flushes
// and stops it. With no exporter it returns a no-op provider.
func Setup(ctx context.Context, cfg Config) (trace.TracerProvider, func(context.Context) error, error) {
	var exp sdktrace.SpanExporter
	var err error
	switch strings.ToLower(cfg.Exporter) {
	case "", ExporterNone:
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	case ExporterStdout, "console":
		w := cfg.Writer
		if w == nil {
			w = os.Stdout
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
	case ExporterOTLP:
		var opts []otlptracehttp.Option
		if cfg.Endpoint != "" {
			u, err := url.Parse(cfg.Endpoint)
			if err != nil || u.Scheme == "" || u.Host == "" {
				return nil, nil, fmt.Errorf("herald/tracing: OTLP endpoint %q: want a URL such as http://localhost:4318", cfg.Endpoint)
			}
			if u.Path == "" || u.Path == "/" {
				u.Path = "/v1/traces" // a base URL, as in OTEL_EXPORTER_OTLP_ENDPOINT
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, nil, fmt.Errorf("%w %q (want %s, %s or %s)", ErrUnknownExporter, cfg.Exporter, ExporterNone, ExporterStdout, ExporterOTLP)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("herald/tracing: %s exporter: %w", cfg.Exporter, err)
	}
	name := cfg.ServiceName
	if name == "" {
		name = "herald"
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", name))))
	return tp, tp.Shutdown, nil
}
