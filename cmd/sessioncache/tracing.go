package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing: an OpenTelemetry span for every HTTP request (otelhttp) and
// every Redis command (redisotel), exported over OTLP when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
// Otherwise nothing is set up: no exporter, no hook, no wrapper.
//
// No token reaches a span: request bodies, headers and query strings are
// not recorded, the path is replaced by its route (/v1/auth/ takes any
// path below it, and a client may put a token anywhere), and Redis spans
// carry the command's name without its arguments (token hashes, user ids).
const (
	envOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envOTLPProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envOTLPTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envOTelDisabled       = "OTEL_SDK_DISABLED"
	envOTelTraces         = "OTEL_TRACES_EXPORTER"
)

// tracing holds the tracer provider of the service, when tracing is on.
type tracing struct {
	tp     trace.TracerProvider
	server string // server.address of the HTTP spans
	flush  func(context.Context) error
}

// tracingOn reports whether the environment asks for traces: an OTLP
// endpoint is set, and neither OTEL_SDK_DISABLED=true nor
// OTEL_TRACES_EXPORTER=none turns them off.
func tracingOn(getenv func(string) string) bool {
	if getenv(envOTLPEndpoint) == "" && getenv(envOTLPTracesEndpoint) == "" {
		return false
	}
	return !strings.EqualFold(getenv(envOTelDisabled), "true") && getenv(envOTelTraces) != "none"
}

// newTracing returns the tracing the environment asks for, or nil. The
// exporter reads the other OTEL_EXPORTER_OTLP_* settings itself (headers,
// timeout, TLS); the provider reads OTEL_TRACES_SAMPLER; the resource
// reads OTEL_SERVICE_NAME (default: sessioncache) and
// OTEL_RESOURCE_ATTRIBUTES.
func newTracing(ctx context.Context, getenv func(string) string, listen string) (*tracing, error) {
	if !tracingOn(getenv) {
		return nil, nil
	}
	protocol := getenv(envOTLPTracesProtocol)
	if protocol == "" {
		protocol = getenv(envOTLPProtocol)
	}
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("%s=%q: want http/protobuf or grpc", envOTLPProtocol, protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(
		resource.NewSchemaless(semconv.ServiceName("sessioncache"), semconv.ServiceVersion(readBuild().version)),
		resource.Environment())
	if err != nil {
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &tracing{tp: tp, server: listen, flush: tp.Shutdown}, nil
}

// instrument makes every command of rdb a span, without its arguments.
func (t *tracing) instrument(rdb redis.UniversalClient) error {
	return redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(t.tp),
		// go-redis records every argument by default: an EVALSHA's are
		// token hashes and user ids.
		redisotel.WithDBStatement(false),
		// The caller's file and line cost a stack walk per command.
		redisotel.WithCallerEnabled(false))
}

// handler wraps next in a server span, continuing a W3C trace context the
// request carries. What otelhttp records of the request that a client
// chooses (the path, X-Forwarded-For) is replaced, before the span ends,
// by the route and the peer address.
func (t *tracing) handler(next http.Handler) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer redactSpan(r)
		next.ServeHTTP(w, r)
	})
	return otelhttp.NewHandler(inner, "sessioncache",
		otelhttp.WithTracerProvider(t.tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithServerName(t.server))
}

// redactSpan overwrites the span's url.path with the request's route (or
// REDACTED when no route took it), and client.address, which otelhttp
// takes from X-Forwarded-For, with the peer's address: the service trusts
// no forwarding header.
func redactSpan(r *http.Request) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	path := "REDACTED"
	if i := strings.IndexByte(r.Pattern, '/'); i >= 0 {
		path = r.Pattern[i:]
		span.SetAttributes(attribute.String("http.route", path))
	}
	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		peer = r.RemoteAddr
	}
	span.SetAttributes(attribute.String("url.path", path), attribute.String("client.address", peer))
}

// shutdown exports the spans still buffered.
func (t *tracing) shutdown(ctx context.Context) error {
	if t.flush == nil {
		return nil
	}
	return t.flush(ctx)
}
