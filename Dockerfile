# The creative conditioner (`cf-ssai conditioner`) as a container image: the
# Cloudflare Container of the manifest worker's ConditionerContainer Durable
# Object (scripts/deploy.sh), or any container runtime
# (scripts/conditioner-image.sh builds it and runs `--help`).
#
#   docker run -e CF_SSAI_API=https://ssai.example.com -e CF_SSAI_TOKEN=cfssai_… IMAGE
#
# With no arguments it runs `cf-ssai conditioner --exit-when-idle-s 300`:
# it leases jobs and exits 0 after 300 s with none (scale to zero: the
# Durable Object starts it again when jobs are queued). Arguments replace
# that default (`IMAGE --poll-s 5` runs until stopped). Exit codes: 0 a
# normal stop (e.g. idle), 1 a fatal error (e.g. the lease refused for
# good: a wrong token), 2 a usage error (bad flags). It logs JSON lines to
# stderr. No shell is used at run time: exec-form ENTRYPOINT and CMD.

# Stage 1: the release binary (same command as scripts/build.sh).
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# The whole workspace (cargo reads every member's manifest); .dockerignore
# leaves out target/, node_modules/, the workers' builds and local secrets.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates crates
COPY workers workers
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cf-ssai \
    && install -D -m 0755 target/release/cf-ssai /out/cf-ssai

# Stage 2: Debian's ffmpeg at a pinned version and CA certificates (the
# CLI's HTTP client is built in: no curl).
FROM debian:bookworm-slim
# Debian bookworm's ffmpeg (bookworm-security). Debian drops superseded
# versions from its mirrors: when this no longer installs, bump it to
# `apt-cache policy ffmpeg`'s candidate and re-run the check.
ARG FFMPEG_VERSION=7:5.1.9-0+deb12u1
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       "ffmpeg=${FFMPEG_VERSION}" ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 conditioner \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin conditioner
# The image's ffmpeg has every decoder, filter, encoder and demuxer the
# conditioner uses: the same list (scripts/conditioner-needs.txt) that
# `scripts/conditioner-image.sh --check` checks outside a container. The
# build fails, naming what is missing, if not.
RUN --mount=type=bind,source=scripts,target=/tmp/cf-ssai-check \
    bash /tmp/cf-ssai-check/conditioner-image.sh --needs-only
COPY --from=build /out/cf-ssai /usr/local/bin/cf-ssai
ENV TMPDIR=/tmp
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/cf-ssai", "conditioner"]
CMD ["--exit-when-idle-s", "300"]
LABEL org.opencontainers.image.title="cf-ssai conditioner" \
      org.opencontainers.image.description="Conditions ad servers' creatives for cf-ssai (ffmpeg)" \
      org.opencontainers.image.licenses="MIT"
