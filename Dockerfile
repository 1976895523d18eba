# The image `docker compose` builds for the `worker` service: yadtq and its dependencies.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install /app \
    && useradd --create-home --uid 10001 yadtq

USER yadtq
# Workers import their operations from YADTQ_IMPORTS; `python -m` puts the working directory (/app)
# on sys.path, so modules copied in with the project, such as examples/, can be named there.
CMD ["python", "-m", "yadtq", "worker"]
