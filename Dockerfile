# The CDS Hooks service. Build: docker build -t neurosarcoidosis-cds .   (docker-compose.yml does it for you)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY cards ./cards
COPY fixtures ./fixtures
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CDS_DATA_DIR=/data \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin cds \
    && mkdir -p /app /data /tmp/prometheus && chown cds:cds /data /tmp/prometheus && chmod 0700 /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
# The fixture loader (docker-compose "fixtures" service) runs from this image too.
COPY scripts ./scripts
COPY fixtures ./fixtures
USER cds
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
# Listening beyond loopback needs CDS_TRUSTED_ISSUERS (JWT authentication), or CDS_ALLOW_INSECURE for a demo.
CMD ["cds-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
