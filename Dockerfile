# pgsidecar's container image: a static-enough release binary on a minimal,
# non-root base. Build: docker build -t ghcr.io/pgsidecar/pgsidecar:0.1.0 .
# Check a config at build or deploy time:
#   docker run --rm -v $PWD/pgsidecar.yaml:/etc/pgsidecar/pgsidecar.yaml:ro IMAGE --config.check --config.file=/etc/pgsidecar/pgsidecar.yaml
# The runtime needs nothing writable: no home, no working directory, no /tmp.
# tests/repo/image.rs checks that this file's user, port and config path agree
# with the manifests in k8s/, and that the binary runs that way.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/pgsidecar

# glibc and libgcc only: TLS is rustls, no OpenSSL.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/pgsidecar /usr/local/bin/pgsidecar
USER 65532:65532
EXPOSE 9188
ENTRYPOINT ["/usr/local/bin/pgsidecar"]
CMD ["--config.file=/etc/pgsidecar/pgsidecar.yaml"]
