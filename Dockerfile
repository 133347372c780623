# syntax=docker/dockerfile:1
#
# pullprobe container image: a static (musl) binary on an empty base image.
#
# Build (from the repository root, Docker with BuildKit; not built in this repo's CI, which has no
# container engine):
#     docker build -t REGISTRY/pullprobe:0.1.0 .
#     docker push REGISTRY/pullprobe:0.1.0
#     (cd manifests && kustomize edit set image pullprobe=REGISTRY/pullprobe:0.1.0)
# Multi-arch (each platform compiles natively, under emulation where needed):
#     docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/pullprobe:0.1.0 --push .
#
# Why static musl + scratch: nothing in the runtime image but the binary (≈10 MB image, no shell,
# no package manager). TLS uses rustls with the ring provider; ring's C/assembly parts are compiled
# with musl-gcc (Debian musl-tools). No CA bundle is shipped on purpose: probes must trust exactly
# what the NODE trusts (its bundles are mounted read-only under /host), and the Kubernetes API CA
# comes from the ServiceAccount mount.
#
# User: the image runs as 65532:65532 (non-root) by default, which suits `pullprobe check` and
# `agent --standalone`. The DaemonSet in manifests/ overrides it with runAsUser 0 (every capability
# dropped, read-only root filesystem) because the node's credentials it must check — the kubelet's
# config.json, client keys referenced by containerd hosts.toml — are usually readable by root only;
# see the comment at the top of manifests/daemonset.yaml for the trade-off and the non-root option.

# The builder image, pinned by digest: a tag (`rust:1.95-slim-bookworm`) is re-pushed for every
# point release and Debian update, so the same Dockerfile could build with another compiler or
# libc; the digest makes the toolchain part of the source (Rust >= 1.89 is required: Cargo.toml
# rust-version, kube 5; the project builds and tests on 1.95).
#
# Where the digest comes from: no registry is reachable from this project's machines, so it could
# not be resolved here. It is the digest public Dockerfiles pin for `rust:1.95-slim-bookworm`
# (found with the code search of docs/supply-chain.md, the same value in several unrelated
# repositories, 2026). Before the first release build, confirm it is the multi-platform index
# (an amd64-only manifest digest would break the arm64 build) and bump it deliberately:
#     docker buildx imagetools inspect rust:1.95-slim-bookworm        # "Digest:" of the index
# and paste that digest below (or pass --build-arg RUST_IMAGE=rust:1.95-slim-bookworm@sha256:...).
ARG RUST_IMAGE=rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082

FROM ${RUST_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
# The musl target of the build platform's own architecture (x86_64 or aarch64).
RUN rustup target add "$(uname -m)-unknown-linux-musl"
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CC_aarch64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and build artefacts between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
    && cargo build --release --locked --target "$target" --bin pullprobe \
    && cp "target/$target/release/pullprobe" /pullprobe
# Fail the build if the binary is not fully static (it must run on an empty base image).
RUN ! ldd /pullprobe 2>/dev/null | grep -q '=>' \
    && /pullprobe --version

FROM scratch
LABEL org.opencontainers.image.title="pullprobe" \
      org.opencontainers.image.description="Per-node container image pull readiness probe" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /pullprobe /pullprobe
USER 65532:65532
# /healthz, /readyz, /metrics, /status (config key `listen`).
EXPOSE 9808
ENTRYPOINT ["/pullprobe"]
CMD ["agent", "--config", "/etc/pullprobe/pullprobe.yaml"]
