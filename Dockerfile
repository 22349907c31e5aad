# Qwen All-in-One: CPU-only image with FP32 weights baked in; serves on port 7860 as uid 1000, offline.
#   docker compose up --build      or      docker build -t qwen-all-in-one . && docker run -p 7860:7860 qwen-all-in-one
# Build args (all optional):
#   BASE_IMAGE        Python 3.11 base image (default: the official slim image; any Debian-like image with python3 + venv)
#   TORCH_INDEX_URL   where CPU torch comes from (default: PyTorch's CPU wheel index, never the CUDA build)
#   TORCH_FIND_LINKS  a folder (mounted into the build) holding the torch +cpu wheel; used instead of TORCH_INDEX_URL
#   PIP_CERT          CA bundle for pip inside the build (behind a TLS-inspecting proxy)
#   ALLOW_CUDA_TORCH  1 only for scripts/image-check.sh's emulated arm64 check (PyPI's aarch64 torch is a CUDA
#                     build): plain `torch==X` and what it requires, all from TORCH_FIND_LINKS; no no-CUDA assertion
#   MODEL_ID, MODEL_REVISION  the hub model the weights stage downloads when weights/MODEL_NAME/ is not in the context
#   MODEL_NAME        folder under weights/ (default Qwen1.5-0.5B-Chat); taken from the build context when there
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG MODEL_NAME=Qwen1.5-0.5B-Chat

# Stage 1: the Python dependencies in a venv, torch as the CPU build.
FROM ${BASE_IMAGE} AS deps
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ARG PIP_CERT=
ARG ALLOW_CUDA_TORCH=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
# An empty PIP_CERT would reach pip as an empty CA path: drop it. `torch==X+cpu` never matches a CUDA wheel,
# and the later `torch==X` pin in requirements.txt is already met by X+cpu. torch's C++ headers and its
# own tests (~150 MB) serve no purpose at run time. Nothing here depends on the CPU architecture: the same
# steps build linux/amd64 and linux/arm64 (PyTorch's CPU index has the +cpu wheel for both).
# ALLOW_CUDA_TORCH=1 is for the emulated arm64 check alone (the only aarch64 torch==X that machine reaches is
# PyPI's CUDA build, downloaded with what it requires into TORCH_FIND_LINKS): torch==X from that folder only
# (pip would otherwise fetch the same GBs from the index again), and a report instead of the no-CUDA assertion.
RUN set -eu; [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    python3 -m venv /opt/venv; \
    torch_pin="$(grep -E '^torch==' /tmp/requirements.txt)"; links_only=; \
    if [ "$ALLOW_CUDA_TORCH" = 1 ]; then links_only=--no-index; else torch_pin="$torch_pin+cpu"; fi; \
    if [ -n "$TORCH_FIND_LINKS" ]; then \
      /opt/venv/bin/pip install "$torch_pin" --find-links "$TORCH_FIND_LINKS" $links_only; \
    else \
      /opt/venv/bin/pip install "$torch_pin" --index-url "$TORCH_INDEX_URL"; \
    fi; \
    /opt/venv/bin/pip install -r /tmp/requirements.txt; \
    if [ "$ALLOW_CUDA_TORCH" = 1 ]; then \
      /opt/venv/bin/python -c "import platform, torch; print('ALLOW_CUDA_TORCH=1 (check only): torch', torch.__version__, 'CUDA', torch.version.cuda, 'on', platform.machine(), '- the app runs it on the CPU')"; \
    else \
      /opt/venv/bin/python -c "import torch; assert not torch.version.cuda, 'CUDA torch got in'; print('torch', torch.__version__)"; \
    fi; \
    rm -rf /opt/venv/lib/python3*/site-packages/torch/include /opt/venv/lib/python3*/site-packages/torch/test

# Stage 2: the weights as FP32 safetensors with a manifest, converted once here so start-up loads FP32 directly.
# weights/MODEL_NAME/ from the build context when it is there (air-gapped builds), else downloaded from the hub.
FROM deps AS weights
ARG MODEL_ID=Qwen/Qwen1.5-0.5B-Chat
ARG MODEL_REVISION=
ARG MODEL_NAME
WORKDIR /src
# The download needs only these three files, so editing the app never downloads the weights again. The context's
# weights/ is bind-mounted, not copied: its GBs are read, never stored in a layer.
COPY pipeline/weights.py pipeline/fp32.py pipeline/errors.py pipeline/
RUN touch pipeline/__init__.py
RUN --mount=type=bind,source=weights,target=/context-weights \
    set -eu; \
    if [ ! -d "/context-weights/$MODEL_NAME" ]; then \
      /opt/venv/bin/python -m pipeline.weights "$MODEL_ID" ${MODEL_REVISION:+--revision "$MODEL_REVISION"} \
        --download-only --dest "/download/$MODEL_NAME" \
      || { echo "No weights for the image: build with network to the hub, or put the model folder at" \
                "weights/$MODEL_NAME/ in the build context (see weights/README.md)." >&2; exit 1; }; \
    fi
# Conversion checks the folder with the app's own loader check, so it needs the modules that check imports.
COPY pipeline/loading.py pipeline/settings.py pipeline/config.py pipeline/prompts.py pipeline/calibration.py pipeline/calibration_reviews.tsv pipeline/
RUN --mount=type=bind,source=weights,target=/context-weights \
    set -eu; \
    src="/context-weights/$MODEL_NAME"; [ -d "$src" ] || src="/download/$MODEL_NAME"; \
    /opt/venv/bin/python -m pipeline.weights --from-dir "$src" --dest "/weights/$MODEL_NAME"; \
    /opt/venv/bin/python -m pipeline.weights --verify "/weights/$MODEL_NAME"

# Stage 3: the sentiment calibration for these weights and this prompt (pipeline/calibration.py), a minute of
# forwards over 300 shipped reviews done here once, so the image starts without it. CALIBRATE_AT_BUILD=0 skips it
# (a build under emulation, where it takes far longer): each container then computes it at its first start.
FROM weights AS calibration
ARG MODEL_NAME
ARG CALIBRATE_AT_BUILD=1
COPY pipeline/ pipeline/
RUN set -eu; if [ "$CALIBRATE_AT_BUILD" = 1 ]; then \
      /opt/venv/bin/python -m pipeline.calibration --model-dir "/weights/$MODEL_NAME"; \
    else echo '{}' > "/weights/$MODEL_NAME/sentiment-calibration.json"; fi

# Stage 4: the runtime. No compilers, no pip cache, no network needed; Hugging Face Spaces runs it as uid 1000.
FROM ${BASE_IMAGE} AS runtime
ARG MODEL_NAME
RUN useradd --uid 1000 --create-home --home-dir /home/user --shell /bin/sh user
ENV HOME=/home/user \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_DIR=/app/weights/${MODEL_NAME} \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    DO_NOT_TRACK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
COPY --from=deps /opt/venv /opt/venv
COPY --from=weights /weights/${MODEL_NAME} /app/weights/${MODEL_NAME}
COPY --from=calibration /weights/${MODEL_NAME}/sentiment-calibration.json /app/weights/${MODEL_NAME}/
WORKDIR /app
COPY pipeline/ pipeline/
# The web layer (the service, the APIs, the page's parts and its static files) and demo.py, the entry point.
COPY app/ app/
COPY demo.py ./
USER 1000:1000
EXPOSE 7860
# Python, not curl: slim images have no curl. start-period covers loading the model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GRADIO_SERVER_PORT', '7860'), timeout=4)"]
CMD ["python", "demo.py"]
