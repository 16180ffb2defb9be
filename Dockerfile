# The sessioncache service: a static binary on a distroless base, running as
# an unprivileged user. Build from the repository root:
#   docker build -t sessioncache .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sessioncache ./cmd/sessioncache

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sessioncache /sessioncache
USER nonroot:nonroot
# In a container the service must listen on every interface, which it
# refuses to do without SESSIONCACHE_API_KEY or SESSIONCACHE_API_KEY_FILE.
ENV SESSIONCACHE_LISTEN=0.0.0.0:8080
EXPOSE 8080
# The image has no shell or curl: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
	CMD ["/sessioncache", "-check", "/healthz"]
ENTRYPOINT ["/sessioncache"]
