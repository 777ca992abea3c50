# Cascade collector / notifier image. Built by docker-compose.yml (services cascade-collector
# and cascade-notifier); the entrypoint is the `cascade` CLI, the command picks the subcommand.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/cascade

# Dependencies first (pinned by constraints.txt) so code changes do not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself (.dockerignore keeps tests, docs, state and secrets out). Installed in
# place (-e) because register profiles are looked up in the source tree (profiles/ beside the
# packages), which a site-packages install would not have.
COPY . ./
RUN pip install --no-deps -c constraints.txt -e . \
    && rm -rf build

COPY scripts/healthcheck.py /usr/local/bin/cascade-healthcheck
RUN chmod 0755 /usr/local/bin/cascade-healthcheck \
    && groupadd --system --gid 10001 cascade \
    && useradd --system --uid 10001 --gid cascade --home-dir /nonexistent --shell /usr/sbin/nologin cascade \
    && install -d -o cascade -g cascade -m 0750 /var/lib/cascade /var/log/cascade

# Writable state; docker-compose.yml mounts named volumes here, which take this ownership on
# first use:
#   /var/lib/cascade  collector spool for InfluxDB outages (influxdb.spool_dir in config.yaml)
#   /var/log/cascade  notifier delivery log (notifier.delivery_log in notifier.yaml)

USER cascade:cascade
# Prometheus exporter and alert API of `cascade run`: HTTPS in docker-compose.yml (metrics.tls in
# config/config.yaml; the certificate is mounted as a secret at run time, never built in: .dockerignore
# keeps secrets/ out of the image).
EXPOSE 9108
ENTRYPOINT ["cascade"]
CMD ["run", "--config", "/etc/cascade/config.yaml"]
