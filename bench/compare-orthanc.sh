#!/usr/bin/env bash
# Tessera versus Orthanc on this machine: `make bench`, or
#
#   bench/compare-orthanc.sh [options of `python -m bench run`]   e.g. --size small --seed 1
#
# Installs Debian's orthanc + orthanc-dicomweb if missing, then runs Orthanc (own config,
# storage and ports under a temporary directory), an embedded Tessera and the benchmark client
# together in a private network namespace (`unshare -n`, loopback only): Debian's Orthanc binds
# every interface, and there nothing but this run can reach it. Orthanc is stopped and the
# temporary directory removed on exit, failure or Ctrl-C. Needs root (apt-get, unshare).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
ORTHANC="$HERE/orthanc/orthanc.sh"
export ORTHANC_HTTP_PORT=${ORTHANC_HTTP_PORT:-8042}

if [ "${TESSERA_BENCH_NETNS:-}" != 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "compare-orthanc.sh needs root (apt-get, unshare -n)" >&2; exit 1; }
  command -v unshare >/dev/null && command -v ip >/dev/null \
    || { echo "compare-orthanc.sh needs unshare (util-linux) and ip (iproute2)" >&2; exit 1; }
  "$ORTHANC" install
  # Install Tessera's environment while PyPI is still reachable: the namespace has no network.
  "$ROOT/run" tessera --help >/dev/null 2>&1 || "$ROOT/run" tessera --help >/dev/null
  exec unshare --net -- env TESSERA_BENCH_NETNS=1 "$0" "$@"
fi

# Inside the private network namespace: nothing but a loopback interface, brought up here.
ip link set lo up
WORK=$(mktemp -d -t tessera-bench-orthanc-XXXXXX)
BENCH_PID=
cleanup() {
  if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true  # the bench stops its Tessera, then exits
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  "$ORTHANC" stop "$WORK" || true
  rm -rf "$WORK"
  # Whatever still runs in this private namespace was started by this run (e.g. a Tessera
  # orphaned by a killed bench): stop it by pid so that the namespace goes away.
  local own pid
  own=$(readlink /proc/$$/ns/net)
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$pid" = $$ ] && continue
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$own" ] && kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$ORTHANC" config "$WORK"
ORTHANC_PID=$("$ORTHANC" start "$WORK")
VERSION=$(dpkg-query -W -f '${Version}' orthanc 2>/dev/null | cut -d+ -f1)
PLUGIN=$(dpkg-query -W -f '${Version}' orthanc-dicomweb 2>/dev/null | cut -d+ -f1)
echo "==> Orthanc $VERSION (DICOMweb plugin $PLUGIN) at http://127.0.0.1:$ORTHANC_HTTP_PORT, pid $ORTHANC_PID"

cd "$ROOT"
# In the background, so that this shell's traps run as soon as a signal arrives.
.venv/bin/python -m bench run \
  --compare "http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web" \
  --compare-pid "$ORTHANC_PID" \
  --compare-label "orthanc $VERSION + dicomweb $PLUGIN" \
  "$@" &
BENCH_PID=$!
status=0
wait "$BENCH_PID" || status=$?
BENCH_PID=
if [ "$status" != 0 ]; then
  echo "==> bench failed ($status); last lines of Orthanc's log:" >&2
  tail -n 20 "$WORK/orthanc.log" >&2 || true
fi
exit "$status"
