# The portal image: one ASGI process per container; Celery worker and beat use the same image.
FROM python:3.12-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN pip install --no-cache-dir . && python manage.py collectstatic --no-input -v0
RUN useradd --system --uid 10001 portal && mkdir -p /app/var && chown portal /app/var
USER portal
EXPOSE 8000
CMD ["uvicorn", "portal.asgi:application", "--http", "portal.server:PortalHttpProtocol", \
     "--host", "0.0.0.0", "--port", "8000", \
     "--no-proxy-headers", "--no-server-header"]
