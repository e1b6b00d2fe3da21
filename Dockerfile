FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends gettext curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY maas ./maas
COPY core ./core
COPY tenancy ./tenancy
COPY catalog ./catalog
COPY deployments ./deployments
COPY metering ./metering
COPY billing ./billing
COPY gateway ./gateway
COPY playground ./playground
COPY simulator ./simulator
RUN pip install .
COPY . .
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 SECRET_KEY=build \
    ENCRYPTION_KEYS=T0QxSuNjfWQB0ZzyEnELBSoBQy7Ic4sNf2DTDx1P2Js= python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["uvicorn", "maas.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--no-access-log"]
