# One image, three services: build every binary once, then pick one with the container's command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The KurrentDB backend is compiled in by default (the services' default feature); build with
# `--build-arg CARGO_FLAGS=--no-default-features` for a PostgreSQL-only image.
ARG CARGO_FLAGS=""
RUN cargo build --release --locked --bins \
      -p command-api -p projector -p query-api ${CARGO_FLAGS}

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /data music \
 && mkdir -p /data/media /data/audit-spool /data/shared && chown -R music /data
COPY --from=build /src/target/release/command-api /src/target/release/projector /src/target/release/query-api /usr/local/bin/
USER music
WORKDIR /data
ENV MEDIA_DIR=/data/media AUDIT_SPOOL_DIR=/data/audit-spool
CMD ["command-api"]
