# syntax=docker/dockerfile:1

# gcnats: a static binary on distroless, run as nonroot (65532). It runs with
# a read-only root filesystem: gcnats writes nothing but the embedded
# JetStream store under GCNATS_STORE_DIR, and it keeps the Genesys SDK from
# reading ~/.genesyscloudgo.
#
#   make image                      # docker build --build-arg VERSION=... -t gcnats:VERSION .
#   docker run --rm --read-only -v gcnats-data:/data -e GENESYSCLOUD_REGION=... gcnats:dev

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Pin the caches to the paths the cache mounts below use (the image's own
# GOPATH is /go), so every build reuses downloaded modules and compiled
# packages.
ENV CGO_ENABLED=0 \
    GOMODCACHE=/root/go/pkg/mod \
    GOCACHE=/root/.cache/go-build
# Modules first: a source change does not download them again.
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=bind,source=go.mod,target=go.mod \
    --mount=type=bind,source=go.sum,target=go.sum \
    go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/gcnats . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gcnats /gcnats
# distroless has no shell to mkdir with: the store directory comes from the
# build stage, owned by nonroot, so an anonymous or named volume on /data
# starts out writable for it.
COPY --from=build --chown=65532:65532 /out/data /data
ENV GCNATS_STORE_DIR=/data
VOLUME /data
USER 65532:65532
# 4222: the embedded JetStream server, which listens on 127.0.0.1 by default
# (for apps in the same pod); set GCNATS_EMBEDDED_LISTEN=0.0.0.0:4222 to
# reach it through a published port. 8080: /healthz, /readyz, /metrics.
EXPOSE 4222 8080
ENTRYPOINT ["/gcnats"]
