# syntax=docker/dockerfile:1
#
# pvc-clone-guard container image.
#   docker build -t REGISTRY/pvc-clone-guard:TAG .
# Needs BuildKit (the default builder since Docker 23; podman/buildah also support
# RUN --mount=type=cache) for the dependency cache below.
#
# Without a registry or a Docker engine, tests/cluster/image.sh builds the image the tests
# run on a real node: the same release binary at the same path, the same entrypoint, cmd,
# user, ports and labels, with exactly the libraries the binary links (glibc and libgcc_s
# of Debian 12, as in distroless/cc-debian12) instead of the distroless base.

# ---- build ------------------------------------------------------------------
# Bookworm on purpose: the binary links glibc dynamically, so it must be built
# against the same (or an older) glibc than the runtime image has. The runtime
# below is Debian 12 (bookworm); a trixie-based builder would produce a binary
# that may need symbols bookworm's glibc does not have.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cargo registry and target/ live in BuildKit cache mounts, so a rebuild after
# a source change recompiles only this crate, not its dependencies. The binary is
# copied out of the cache mount in the same step (the mount is not in the layer).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/pvc-clone-guard /out/pvc-clone-guard

# ---- runtime ----------------------------------------------------------------
# distroless/cc rather than distroless/static: a default Rust build links glibc
# and libgcc_s dynamically, which cc-debian12 provides (static has no libc at all).
# The alternative, a fully static x86_64-unknown-linux-musl build, needs musl-tools
# for ring and a target per architecture; cc keeps the build a plain
# `cargo build --release`. No shell, no package manager; :nonroot runs as 65532.
# For reproducible builds, pin both base images by digest (@sha256:...).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="pvc-clone-guard" \
      org.opencontainers.image.description="Validating admission webhook that refuses invalid CSI volume clones"
COPY --from=build /out/pvc-clone-guard /pvc-clone-guard
USER 65532:65532
# 8443: HTTPS webhook (POST /validate); 8080: plain HTTP /livez, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/pvc-clone-guard"]
CMD ["serve"]
