# The sessioncache service: a static binary on a distroless base, running as
# an unprivileged user. Build from the repository root, naming the version
# (the tag the manifests pin), which the binary reports (-version, the
# sessioncache_build_info metric):
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/sessioncache/sessioncache:0.1.0 .
# The Go version is cmd/go.mod's (the service's module; the library's go.mod
# declares the oldest Go it supports, an older one).
FROM golang:1.26.8 AS build
ARG VERSION=dev
ARG REVISION=unknown
WORKDIR /src
# The workspace (go.work) joins the library's module with cmd/, bench/ and
# deploytest/.
COPY go.work go.mod go.sum ./
COPY cmd/go.mod cmd/go.sum ./cmd/
COPY bench/go.mod bench/go.sum ./bench/
COPY deploytest/go.mod deploytest/go.sum ./deploytest/
RUN go mod download && cd cmd && go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/sessioncache ./cmd/sessioncache

# distroless publishes no version tags; pin a digest
# (gcr.io/distroless/static-debian12:nonroot@sha256:...) where builds must be
# reproducible, and let a bot refresh it.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sessioncache /sessioncache
# The image's nonroot user, numeric so that Kubernetes' runAsNonRoot can
# check it.
USER 65532:65532
# In a container the service must listen on every interface, which it
# refuses to do without an API key (SESSIONCACHE_API_KEY_FILE and the like)
# and without SESSIONCACHE_ISSUER, the URL clients reach it at: the
# deployment sets both (docker-compose.yml, deploy/kubernetes).
# /metrics and /openapi.yaml are served on a port of their own, never on
# the API's.
ENV SESSIONCACHE_LISTEN=0.0.0.0:8080 SESSIONCACHE_METRICS_LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
# The image has no shell or curl: the binary probes itself. Ready means
# Redis answers and does not evict (docker-compose.yml uses this check).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
	CMD ["/sessioncache", "-check", "/readyz"]
ENTRYPOINT ["/sessioncache"]
