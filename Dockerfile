# crm-triggers worker image: `docker build -t crm-triggers .`, then
# `docker run --rm crm-triggers worker --rules /app/rules/packs` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info

# Run as an unprivileged user; the state folder is the only place it writes.
RUN useradd --system --uid 10001 --create-home --home-dir /home/crm crm \
    && mkdir -p /var/lib/crm-triggers/state /var/lib/crm-triggers/deliver \
    && chown -R crm:crm /var/lib/crm-triggers
USER crm

ENV CRM_STATE_DIR=/var/lib/crm-triggers/state
EXPOSE 6066
ENTRYPOINT ["crm-triggers"]
CMD ["--help"]
