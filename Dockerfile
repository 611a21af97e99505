# One image; the command picks the role: scheduler, worker, dashboard (or run, poll, status, ...).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md scheduler.py ./
COPY worker ./worker
# pip and setuptools build the venv; at run time they are dead weight (6 MB) and pip a way to
# install things, so both leave the venv here. So do Apprise's translation sources (.po, .pot:
# 1.5 MB); it reads only the compiled .mo files.
RUN python -m venv /opt/newswatch \
    && /opt/newswatch/bin/pip install --no-cache-dir . \
    && /opt/newswatch/bin/pip uninstall --yes pip setuptools \
    && find /opt/newswatch -path '*/apprise/i18n/*' \( -name '*.po' -o -name '*.pot' \) -delete

FROM python:3.11-slim
# No pip in the running image: nothing gets installed at run time.
RUN useradd --create-home --uid 10001 --user-group newswatch \
    && python -m pip uninstall --yes pip setuptools wheel
COPY --from=build /opt/newswatch /opt/newswatch
COPY config /app/config
WORKDIR /app
ENV PATH=/opt/newswatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NEWSWATCH_CONFIG=/app/config/newswatch.yaml \
    NEWSWATCH_METRICS_BIND=0.0.0.0
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["newswatch", "health"]
ENTRYPOINT ["newswatch"]
CMD ["run"]
