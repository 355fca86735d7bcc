# One image; migrate, web, worker and beat differ only by command (see docker-compose.yml, which also gives each its
# own health check: a HEALTHCHECK here would be inherited by worker, beat and migrate, which serve no HTTP).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PORT=8000
WORKDIR /app
# Production packages only (the embedded PostgreSQL/Redis and the test tools are in requirements-embedded/-dev.txt).
COPY requirements.txt .
RUN pip install -r requirements.txt && useradd --create-home --uid 10001 app
COPY . .
# Static files (admin, dashboard, Swagger UI) with hashed names, compressed; WhiteNoise serves them from STATIC_ROOT.
RUN SECRET_KEY=build-only FIELD_ENCRYPTION_KEYS=YnVpbGQtb25seS1ub3QtYS1zZWNyZXQta2V5LTMyYnk= \
    DATABASE_URL=postgres://build@localhost/build python manage.py collectstatic --noinput
USER app
EXPOSE 8000
# gunicorn binds 0.0.0.0:$PORT.
CMD ["gunicorn", "app.wsgi:application", "--workers", "2", "--timeout", "30"]
