# The image of a Kubernetes replay's pods: build topolab, then a small runtime image that runs
# it as a non-root user (the pods also set runAsNonRoot, a read-only root file system and no
# capabilities). Build and load into kind (README, "Replays on Kubernetes"):
#   docker build -t topolab:latest . && kind load docker-image topolab:latest --name topolab

# Stage 1: build.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin topolab

# Stage 2: run.
FROM debian:bookworm-slim AS runtime
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin topolab
COPY --from=build /src/target/release/topolab /usr/local/bin/topolab
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/topolab"]
CMD ["--help"]
