# openchatd container image.
#
#   docker build \
#     --build-arg BUILD_VERSION=main \
#     --build-arg BUILD_COMMIT=$(git rev-parse --verify HEAD) \
#     --build-arg BUILD_TIME=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
#     -t openchat-backend:dev .
#
# BUILD_COMMIT is required so that every start-up log line names the commit it runs.
# glommio needs io_uring: run with a seccomp profile that allows it (Docker's default profile
# blocks io_uring_setup), e.g. `--security-opt seccomp=unconfined`, and `--ulimit memlock=-1`.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
ARG BUILD_COMMIT
ARG BUILD_VERSION=dev
ARG BUILD_TIME=unknown
RUN if [ -z "${BUILD_COMMIT}" ]; then \
      echo "error: BUILD_COMMIT build argument is required: docker build --build-arg BUILD_COMMIT=\$(git rev-parse --verify HEAD) ..." >&2; \
      exit 1; \
    fi
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml build.rs ./
COPY src ./src
COPY benches ./benches
COPY migrations ./migrations
ENV BUILD_COMMIT=${BUILD_COMMIT} BUILD_VERSION=${BUILD_VERSION} BUILD_TIME=${BUILD_TIME}
RUN cargo build --release --locked --bin openchatd \
 && install -D -m 0755 target/release/openchatd /out/openchatd

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 openchat \
 && useradd --system --uid 10001 --gid openchat --home-dir /var/lib/openchat --create-home openchat \
 && mkdir -p /var/lib/openchat/data \
 && chown -R openchat:openchat /var/lib/openchat
COPY --from=build /out/openchatd /usr/local/bin/openchatd
USER 10001:10001
WORKDIR /var/lib/openchat
ENV OPENCHAT_HTTP_ADDR=:8080 \
    OPENCHAT_DATA_DIR=/var/lib/openchat/data \
    OPENCHAT_RTC_UDP_PORT=50000
VOLUME ["/var/lib/openchat/data"]
# HTTP and WebSocket
EXPOSE 8080/tcp
# Media: one UDP port per shard, OPENCHAT_RTC_UDP_PORT + shard index (64 shards at most here).
EXPOSE 50000-50063/udp
ENTRYPOINT ["/usr/local/bin/openchatd"]
