#!/usr/bin/env bash
# The reference peer for `python -m bench run --compare`: Debian's Orthanc with its DICOMweb
# plugin, with its own configuration, storage and ports (see bench/README.md, "Orthanc").
#
#   orthanc.sh install      install Debian's orthanc + orthanc-dicomweb if missing (root)
#   orthanc.sh config DIR   write DIR/orthanc.json (storage under DIR/storage)
#   orthanc.sh start DIR    start Orthanc in the background, wait until /system answers,
#                           write its pid to DIR/orthanc.pid
#   orthanc.sh stop DIR     stop the Orthanc whose pid is in DIR/orthanc.pid
#
# Debian's Orthanc binds every interface and has no listen-address option: start it only
# inside a private network namespace (bench/compare-orthanc.sh does that), never on a shared
# network. Environment: ORTHANC_HTTP_PORT (8042), ORTHANC_DICOM_PORT (4242).
set -euo pipefail

HTTP_PORT=${ORTHANC_HTTP_PORT:-8042}
DICOM_PORT=${ORTHANC_DICOM_PORT:-4242}
PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
START_TIMEOUT=60   # seconds until /system must answer
STOP_TIMEOUT=30    # seconds between SIGTERM and SIGKILL

die() { echo "orthanc.sh: $*" >&2; exit 1; }

answers() {  # does URL answer 200 within 2 s? (python3, which Tessera needs anyway, not curl)
  python3 - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
}

install_orthanc() {
  if command -v Orthanc >/dev/null 2>&1 && [ -e "$PLUGIN" ]; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "installing Orthanc needs root (apt-get)"
  echo "==> installing Debian's orthanc and orthanc-dicomweb" >&2
  # Debian's package would start a system-wide Orthanc (every interface, port 8042): forbid
  # service starts while installing, with a temporary policy-rc.d unless one already exists.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  local status=0
  {
    apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      orthanc orthanc-dicomweb
  } >&2 || status=$?
  [ "$added_policy" = 1 ] && rm -f "$policy"
  [ "$status" = 0 ] || die "apt-get install failed ($status)"
  # Belt and braces: if a system Orthanc runs anyway (e.g. under systemd), stop and disable it.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now orthanc >/dev/null 2>&1 || true
  elif [ -s /run/orthanc.pid ] && kill -0 "$(cat /run/orthanc.pid)" 2>/dev/null; then
    /etc/init.d/orthanc stop >&2 || true
  fi
}

write_config() {
  local dir=$1
  mkdir -p "$dir/storage"
  # Fairness (bench/README.md): the settings Orthanc's scalability guide recommends for speed,
  # full (correct) WADO-RS metadata, and the same durability as Tessera's embedded mode.
  cat > "$dir/orthanc.json" <<JSON
{
  "Name": "tessera-bench-peer",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/storage",
  "Plugins": ["$PLUGIN"],
  "HttpServerEnabled": true,
  "HttpPort": $HTTP_PORT,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "SslEnabled": false,
  "DicomServerEnabled": true,
  "DicomAet": "BENCHPEER",
  "DicomPort": $DICOM_PORT,
  "OrthancExplorerEnabled": false,
  "WebDavEnabled": false,
  "DefaultEncoding": "Utf8",
  "StorageCompression": false,
  "SyncStorageArea": false,
  "StorageAccessOnFind": "Never",
  "SaveJobs": false,
  "KeepAlive": true,
  "TcpNoDelay": true,
  "HttpCompressionEnabled": false,
  "HttpThreadsCount": 50,
  "ConcurrentJobs": 2,
  "MaximumStorageCacheSize": 128,
  "HttpRequestTimeout": 600,
  "OverwriteInstances": false,
  "DicomWeb": {
    "Enable": true,
    "Root": "/dicom-web/",
    "EnableWado": true,
    "WadoRoot": "/wado",
    "Ssl": false,
    "StudiesMetadata": "Full",
    "SeriesMetadata": "Full"
  }
}
JSON
}

start_orthanc() {
  local dir=$1
  [ -f "$dir/orthanc.json" ] || write_config "$dir"
  Orthanc "$dir/orthanc.json" > "$dir/orthanc.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/orthanc.pid"
  local deadline=$((SECONDS + START_TIMEOUT))
  until answers "http://127.0.0.1:$HTTP_PORT/system"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/orthanc.log" >&2
      die "Orthanc exited during start-up"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      stop_orthanc "$dir"
      die "Orthanc did not answer /system within ${START_TIMEOUT}s"
    fi
    sleep 0.2
  done
  echo "$pid"
}

stop_orthanc() {
  local dir=$1 pid
  [ -s "$dir/orthanc.pid" ] || return 0
  pid=$(cat "$dir/orthanc.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/orthanc.pid"
}

cmd=${1:-}
case "$cmd" in
  install) install_orthanc ;;
  config) [ $# -eq 2 ] || die "usage: orthanc.sh config DIR"; write_config "$2" ;;
  start) [ $# -eq 2 ] || die "usage: orthanc.sh start DIR"; start_orthanc "$2" ;;
  stop) [ $# -eq 2 ] || die "usage: orthanc.sh stop DIR"; stop_orthanc "$2" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
