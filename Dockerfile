# eeg-bridge: LSL EEG -> power spectra -> Grafana Live + InfluxDB.
#   docker build -t eeg-bridge .
#   docker run --rm --network host -e LSL_STREAM_NAME=... eeg-bridge
# LSL finds streams by multicast: the container must share a network namespace with the LSL
# source (host networking for a real amplifier; see docker-compose.yml for the simulator).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install . && rm -rf /src

# Run unprivileged; the spool (the archive's durable buffer) lives on a volume so frames not yet
# in InfluxDB survive a container restart.
RUN useradd --system --create-home --uid 10001 eeg \
    && mkdir -p /var/lib/eeg-bridge/spool \
    && chown -R eeg /var/lib/eeg-bridge
USER eeg
WORKDIR /home/eeg
ENV SPOOL_DIR=/var/lib/eeg-bridge/spool
VOLUME /var/lib/eeg-bridge

ENTRYPOINT ["eeg-bridge"]
