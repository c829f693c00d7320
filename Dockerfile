# syntax=docker/dockerfile:1
#
# k2e images, one file, one target each:
#   docker build --target api        -t k2e-api .         FastAPI service, no TensorFlow
#   docker build --target worker     -t k2e-worker .      Celery worker, tensorflow-cpu, queue "cpu"
#   docker build --target worker-gpu -t k2e-worker-gpu .  Celery worker, CUDA TensorFlow, queue "gpu"
# Without --target the last stage (the CPU worker) is built.
# docker-compose.yml builds all three; the commands match k2e/launcher/stack.py.

# The GPU worker starts from TensorFlow's CUDA image (Python 3.11, CUDA/cuDNN for TF 2.15).
ARG GPU_BASE=tensorflow/tensorflow:2.15.0-gpu

# ---------------------------------------------------------------------------
FROM python:3.11-slim AS base

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    K2E_DATA_DIR=/data

# Non-root runtime user; /data is created here so a fresh named volume mounted
# there inherits k2e's ownership.
RUN groupadd --system --gid 10001 k2e \
 && useradd --system --uid 10001 --gid k2e --create-home --home-dir /home/k2e k2e \
 && mkdir -p /data \
 && chown k2e:k2e /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY k2e/ k2e/
COPY service/ service/
COPY worker/ worker/

# ---------------------------------------------------------------------------
FROM base AS api

# The server extra: the API never imports TensorFlow.
RUN pip install '.[server]' && rm -rf build ./*.egg-info

USER k2e
EXPOSE 8000
# slim has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "uvicorn", "service.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--timeout-graceful-shutdown", "3"]

# ---------------------------------------------------------------------------
FROM ${GPU_BASE} AS worker-gpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    K2E_DATA_DIR=/data

# k2e's worker requires Python 3.11 (TensorFlow 2.15; pyproject's worker extra); fail the
# build early if GPU_BASE differs.
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'

RUN groupadd --system --gid 10001 k2e \
 && useradd --system --uid 10001 --gid k2e --create-home --home-dir /home/k2e k2e \
 && mkdir -p /data \
 && chown k2e:k2e /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY k2e/ k2e/
COPY service/ service/
COPY worker/ worker/

# Not the `worker` extra: that pins tensorflow-cpu. The server extra brings the core's
# stores and readers (a superset of what the worker extra lists besides TensorFlow), and the
# CUDA build of the same release goes in, with the same estimator pin.
RUN python3 -m pip install '.[server]' tensorflow==2.15.1 tensorflow-estimator==2.15.0 \
 && rm -rf build ./*.egg-info

USER k2e
# One job per child process: the child exits after each job, so the GPU memory
# TensorFlow holds is returned to the device before the next one starts.
CMD ["python3", "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "gpu", "--concurrency", "1", "--loglevel", "INFO", "--max-tasks-per-child", "1"]

# ---------------------------------------------------------------------------
FROM base AS worker

# pyproject's `worker` extra: the core's stores and readers, tensorflow-cpu and
# tensorflow-estimator (no FastAPI).
RUN pip install '.[worker]' && rm -rf build ./*.egg-info

USER k2e
CMD ["python", "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "cpu", "--concurrency", "1", "--loglevel", "INFO"]
