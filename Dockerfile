FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first so code changes don't invalidate this layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

RUN useradd --system --uid 10001 --no-log-init hub

COPY run.py ./
COPY hub/ hub/
COPY handlers/ handlers/
COPY domain/ domain/
COPY channels/ channels/
COPY config/ config/

USER hub

EXPOSE 8888

# No curl in slim: urlopen raises (non-zero exit) on a refused connection or non-2xx status.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HUB_PORT', '8888'), timeout=3)"]

CMD ["python", "run.py"]
