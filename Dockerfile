# syntax=docker/dockerfile:1
#
# phonehome: a static binary on distroless, as a non-root user.
#
#   docker build -t phonehome --build-arg VERSION=$(git describe --always --dirty) .
#   docker run -d --name phonehome -p 53:53/udp -p 53:53/tcp -p 8053:8053 phonehome
#
# Or the whole set with Prometheus and Grafana: deploy/compose (see deploy/README.md).

ARG GO_VERSION=1.26

# The builder runs on the build machine's platform and cross-compiles, so a
# multi-platform build (--platform linux/amd64,linux/arm64) needs no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# CGO_ENABLED=0: a static binary that needs no libc in the runtime image.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
      go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/phonehome ./cmd/phonehome && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
      go build -trimpath -ldflags "-s -w" -o /out/healthcheck ./deploy/healthcheck
# The state directory, for the history: the runtime image has no shell to
# make it, and it must be nonroot's, so that a volume mounted on it starts
# writable.
RUN mkdir -p /out/state
# A sample config that does not load fails the build, not the container.
# (go run: the binary above may be for another platform.)
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go run ./cmd/phonehome validate -config deploy/docker/phonehome.yaml

# distroless/static: CA certificates (for tls:// upstreams), /etc/passwd with
# the nonroot user (65532), tzdata; no shell and no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="phonehome" \
      org.opencontainers.image.description="A DNS filtering resolver that knows what Windows phones home to" \
      org.opencontainers.image.source="https://github.com/phonehome/phonehome" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/phonehome /out/healthcheck /usr/local/bin/
COPY deploy/docker/phonehome.yaml /etc/phonehome/phonehome.yaml
# history.path defaults to $STATE_DIRECTORY/history.db, as under systemd.
COPY --from=build --chown=65532:65532 /out/state /var/lib/phonehome
ENV STATE_DIRECTORY=/var/lib/phonehome
VOLUME ["/var/lib/phonehome"]
USER nonroot:nonroot
# Port 53 as a non-root user needs no capability: Docker (20.10 and later)
# and Podman set net.ipv4.ip_unprivileged_port_start=0 in the container's
# network namespace. With --network host they cannot; see deploy/README.md.
EXPOSE 53/udp 53/tcp 8053/tcp
# distroless has no curl or wget: deploy/healthcheck is a 2 MB static HTTP
# check. Pass -url when the config's http address is not :8053.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "-url", "http://127.0.0.1:8053/healthz"]
ENTRYPOINT ["/usr/local/bin/phonehome"]
CMD ["serve", "-config", "/etc/phonehome/phonehome.yaml"]
