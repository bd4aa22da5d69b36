# Build: docker build -t roistat-leads .
# Run:   docker run -p 8080:8080 -p 50051:50051 -v roistat-leads:/data \
#          -e ROISTAT_USER=demo -e ROISTAT_PASSWORD=secret \
#          -e ROISTAT_LEADS_GRPC_TOKEN=$(openssl rand -hex 32) roistat-leads
# No token is baked in: without one (or client certificates, or
# ROISTAT_LEADS_GRPC_INSECURE=true), a gRPC address beyond loopback refuses to start.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that source changes rebuild only the project.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY crates crates
COPY proto proto
COPY migrations migrations
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home roistat
COPY --from=build /src/target/release/roistat-leads /usr/local/bin/roistat-leads
USER roistat
WORKDIR /data
ENV DATABASE_URL=sqlite:///data/roistat-leads.db \
    ROISTAT_LEADS_HTTP_ADDR=0.0.0.0:8080 \
    ROISTAT_LEADS_GRPC_ADDR=0.0.0.0:50051
# The console (8081) listens on the container's loopback until
# ROISTAT_LEADS_CONSOLE_ADDR=0.0.0.0:8081 and ROISTAT_LEADS_CONSOLE_TOKEN are set.
EXPOSE 8080 50051 8081
VOLUME ["/data"]
# Over HTTPS when --http-tls-cert is set (a local probe: the certificate is not checked).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/readyz || curl -fsSk https://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["roistat-leads"]
CMD ["serve"]
