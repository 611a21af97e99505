# One image; the command picks the role: scheduler, worker, dashboard (or run, poll, status, ...).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md scheduler.py ./
COPY worker ./worker
RUN python -m venv /opt/newswatch \
    && /opt/newswatch/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 newswatch
COPY --from=build /opt/newswatch /opt/newswatch
COPY config /app/config
WORKDIR /app
ENV PATH=/opt/newswatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NEWSWATCH_CONFIG=/app/config/newswatch.yaml
USER newswatch
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["newswatch", "health"]
ENTRYPOINT ["newswatch"]
CMD ["run"]
