# Build stage: compile thrifty in release mode.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin thrifty

# Runtime stage: a slim Debian with CA roots, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/thrifty --create-home thrifty
COPY --from=build /src/target/release/thrifty /usr/local/bin/thrifty
COPY config/thrifty.toml /etc/thrifty/thrifty.toml
ENV THRIFTY_CONFIG=/etc/thrifty/thrifty.toml \
    THRIFTY_LISTEN=0.0.0.0:8080 \
    THRIFTY_DATA_DIR=/var/lib/thrifty/data \
    THRIFTY_LOG_FORMAT=json
USER thrifty
WORKDIR /var/lib/thrifty
VOLUME /var/lib/thrifty
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/thrifty"]
CMD ["serve"]
