# The image of a Kubernetes replay's pods: build topolab, then a small runtime image that runs
# it as a non-root user (the pods also set runAsNonRoot, a read-only root file system and no
# capabilities). Build and load into kind (README, "Replays on Kubernetes"):
#   docker build -t topolab:latest . && kind load docker-image topolab:latest --name topolab
# For the cuda backend (runtime.backend = "cuda"; the worker pods ask for nvidia.com/gpu), the
# runtime stage needs cuBLAS and NVRTC (the driver comes from the node's NVIDIA toolkit):
#   docker build --build-arg RUNTIME_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 -t topolab-cuda:latest .
ARG RUNTIME_BASE=debian:bookworm-slim

# Stage 1: build.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin topolab

# Stage 2: run.
FROM ${RUNTIME_BASE} AS runtime
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin topolab
COPY --from=build /src/target/release/topolab /usr/local/bin/topolab
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/topolab"]
CMD ["--help"]
