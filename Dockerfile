# One image for every Mergeable process: web (gunicorn), worker (bin/worker) and beat (Celery).
# docker-compose.yml picks the process with `command:`; the default is the web server.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git checks out the repositories agents work on; bubblewrap sandboxes their commands.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin mergeable

WORKDIR /app

# Only what the app needs: never .env, .venv, var/ or .git, whatever the build context holds.
COPY pyproject.toml manage.py ./
COPY evalsite evalsite
COPY runs runs
COPY scoring scoring
COPY templates templates
COPY static static
COPY demo demo
COPY bin/worker bin/worker

# `pip install .` brings the dependencies from pyproject.toml. The code itself runs from /app
# (PYTHONPATH below), because settings find templates/ and static/ next to the evalsite package.
RUN pip install . && rm -rf build *.egg-info

# Static files are baked into the image and served by whitenoise. Settings refuse to load without
# a SECRET_KEY and encryption keys when DEBUG is off, so this step alone gets throwaway ones.
RUN DEBUG=false \
    SECRET_KEY=collectstatic-build-step-only-not-a-secret \
    MERGEABLE_ENCRYPTION_KEYS=YnVpbGQtb25seS1ub3QtYS1zZWNyZXQtMzJieXRlcyE= \
    MERGEABLE_VAR_DIR=/tmp/build-var \
    STATIC_ROOT=/app/staticfiles \
    python manage.py collectstatic --no-input -v 0 \
    && rm -rf /tmp/build-var

# Writable state lives under /data; docker-compose.yml mounts volumes on these directories, and a
# fresh named volume inherits their ownership, so the non-root user can write to it.
RUN mkdir -p /data/var /data/media /data/workspaces /data/repos \
    && chown -R mergeable:mergeable /data

# DEBUG is off unless a deployment says otherwise (manage.py alone would default it on).
ENV PYTHONPATH=/app \
    DEBUG=false \
    DJANGO_SETTINGS_MODULE=evalsite.settings \
    STATIC_ROOT=/app/staticfiles \
    MERGEABLE_VAR_DIR=/data/var \
    MEDIA_ROOT=/data/media \
    MERGEABLE_WORKSPACE_ROOT=/data/workspaces \
    MERGEABLE_LOCAL_REPO_ROOTS=/data/repos

USER mergeable
EXPOSE 8000

# Threaded workers sized from the CPUs the container may use (evalsite/gunicorn_config.py).
CMD ["gunicorn", "evalsite.wsgi:application", "--config", "python:evalsite.gunicorn_config", \
     "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
