# Production image: non-root, gunicorn (uvicorn workers, ASGI) for the web, the same image runs the Celery worker and beat.
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production

WORKDIR /app
RUN groupadd --system keel && useradd --system --gid keel --home /app --shell /usr/sbin/nologin keel

COPY requirements/ requirements/
RUN pip install -r requirements/base.txt

COPY --chown=keel:keel . .
# collectstatic needs settings but no real secrets or services.
RUN DJANGO_SECRET_KEY=build-only DJANGO_ALLOWED_HOSTS=build DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --noinput \
 && mkdir -p /app/var && chown -R keel:keel /app/var

USER keel
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"
# gunicorn's process manager over uvicorn workers: the whole app under ASGI, so the live event stream holds no
# worker while it waits (ADR 0050); about 2 × cores − 1 processes, each running Django's sync views one at a time
# as the sync workers did (ADR 0013). `--graceful-timeout` bounds how long open streams delay a restart.
CMD ["gunicorn", "config.asgi:application", "--config", "python:config.gunicorn", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--worker-class", "uvicorn_worker.UvicornWorker", "--timeout", "30", "--graceful-timeout", "5", "--access-logfile", "-"]
