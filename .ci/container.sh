#!/usr/bin/env bash
# The container image, built and run: the Dockerfile's runtime stage over a Debian
# base made here with mmdebstrap (no registry of base images is reachable), with the
# release binary built on this machine standing in for the build stage. Checks: a
# non-root numeric user, a read-only root filesystem, the webhook answers ok, the
# probe passes, gRPC serves with a token, SIGTERM ends it with status 0 within the
# drain, and what was written survives re-creating the container on the volume.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in podman mmdebstrap runc; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap >/dev/null
    break
  fi
done
work=$(mktemp -d)
cleanup() {
  podman rm -f rl-ci-1 rl-ci-2 >/dev/null 2>&1 || true
  podman volume rm -f rl-ci-data >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
. .ci/podman-conf.sh

if ! podman image exists localhost/debian-base:bookworm; then
  mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$work/base.tar"
  podman import --quiet "$work/base.tar" localhost/debian-base:bookworm >/dev/null
fi
cargo build --release --locked --bin roistat-leads
mkdir -p "$work/build/src/target/release"
cp target/release/roistat-leads "$work/build/src/target/release/"
podman build --quiet --format docker --target runtime \
  --build-context build="$work/build" \
  --build-arg RUNTIME_BASE=localhost/debian-base:bookworm \
  -t localhost/roistat-leads:ci . >/dev/null
[ "$(podman image inspect localhost/roistat-leads:ci --format '{{.Config.User}}')" = "10001:10001" ]

token=$(printf 'demosecret' | md5sum | cut -d' ' -f1)
grpc_token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
run() { # name
  podman run -d --name "$1" --read-only -v rl-ci-data:/data \
    -p 127.0.0.1:18380:8080 -p 127.0.0.1:18381:50051 \
    -e ROISTAT_USER=demo -e ROISTAT_PASSWORD=secret \
    -e ROISTAT_LEADS_GRPC_ADDR=0.0.0.0:50051 -e ROISTAT_LEADS_GRPC_TOKEN="$grpc_token" \
    localhost/roistat-leads:ci >/dev/null
  for _ in $(seq 1 100); do
    curl -fsS http://127.0.0.1:18380/readyz >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  podman logs "$1"; return 1
}
run rl-ci-1
[ "$(podman exec rl-ci-1 sh -c 'id -u')" = 10001 ]
if podman exec rl-ci-1 sh -c 'touch /probe-write' 2>/dev/null; then
  echo "container: the root filesystem is writable" >&2; exit 1
fi
answer=$(curl -fsS "http://127.0.0.1:18380/webhook?user=demo&token=$token&action=lead&id=ci-1")
[ "$answer" = '{"status":"ok","order_id":"ci-1"}' ] || { echo "container: $answer" >&2; exit 1; }
podman exec rl-ci-1 roistat-leads probe
streamed=$(timeout 10 target/release/roistat-leads tail --grpc-addr 127.0.0.1:18381 \
  --grpc-token "$grpc_token" | head -1 || true)
case "$streamed" in *'"lead_id":"ci-1"'*) ;; *) echo "container: gRPC gave: $streamed" >&2; exit 1 ;; esac
podman stop -t 15 rl-ci-1 >/dev/null
[ "$(podman inspect rl-ci-1 --format '{{.State.ExitCode}}')" = 0 ]
podman rm rl-ci-1 >/dev/null
# A new container on the same volume: the lead is there (a retry is not a new one).
run rl-ci-2
curl -fsS "http://127.0.0.1:18380/webhook?user=demo&token=$token&action=lead&id=ci-1" >/dev/null
podman logs rl-ci-2 2>&1 | grep -q 'lead_id=ci-1 sequence=1 created=false' \
  || { podman logs rl-ci-2; echo "container: the lead did not survive" >&2; exit 1; }
podman rm -f rl-ci-2 >/dev/null
echo "container: ok"

