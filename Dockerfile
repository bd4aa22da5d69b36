# Build: docker build -t roistat-leads .   (or podman build)
# Run:   docker run -p 8080:8080 -p 50051:50051 -v roistat-leads:/data \
#          -e ROISTAT_USER=demo -e ROISTAT_PASSWORD=secret \
#          -e ROISTAT_LEADS_GRPC_ADDR=0.0.0.0:50051 \
#          -e ROISTAT_LEADS_GRPC_TOKEN=$(openssl rand -hex 32) roistat-leads
#
# No setting is fixed here, by ENV or by flags in CMD: either would beat a mounted
# configuration file (flags > environment > file > defaults). The binary's defaults
# serve: the store is roistat-leads.db in /data (the volume), the webhook listens on
# 0.0.0.0:8080, LeadService on 127.0.0.1:50051 (give ROISTAT_LEADS_GRPC_ADDR and a
# token, client certificates or ROISTAT_LEADS_GRPC_INSECURE to reach it from
# outside: without one of them a gRPC address beyond loopback refuses to start).
# The root filesystem may be read-only: the service writes /data only.

# The runtime stage's base; a Debian bookworm image with its apt sources.
ARG RUNTIME_BASE=debian:bookworm-slim

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that source changes rebuild only the project: the
# workspace's manifests with empty sources.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY crates crates
COPY bench/Cargo.toml bench/Cargo.toml
COPY proto proto
COPY migrations migrations
RUN mkdir -p src bench/src/bin \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && echo 'fn main() {}' > bench/src/bin/noop_ceiling.rs \
    && cargo build --release --locked --bin roistat-leads \
    && rm -rf src
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin roistat-leads

FROM ${RUNTIME_BASE} AS runtime
# CA certificates for PostgreSQL over TLS with the system's roots (installed unless
# the base has them); nothing else: the health check is the binary's own `probe`.
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /src/target/release/roistat-leads /usr/local/bin/roistat-leads
LABEL org.opencontainers.image.title="roistat-leads" \
      org.opencontainers.image.description="Receives Roistat's own-CRM webhooks, stores every lead durably and serves them over gRPC" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="0.3.0"
# A numeric user, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# The console (8081) listens on the container's loopback until
# ROISTAT_LEADS_CONSOLE_ADDR=0.0.0.0:8081 and ROISTAT_LEADS_CONSOLE_TOKEN are set.
EXPOSE 8080 50051 8081
# GET /readyz on the configured address (over HTTPS when the webhook has a
# certificate); reads the same settings as serve.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["roistat-leads", "probe"]
ENTRYPOINT ["roistat-leads"]
CMD ["serve"]
