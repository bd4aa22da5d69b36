#!/usr/bin/env bash
# The embedded-store manifest run for real with `podman kube play`, on the image
# .ci/container.sh built: rendered by kube-play.py (a Pod from the StatefulSet's
# template, see there), then: readiness and liveness pass on the paths and port the
# probes name, the webhook answers ok with the Secret's password, the pod runs as
# 10001 on a read-only root, and stopping it ends the service with status 0.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
cleanup() {
  podman kube down "$work/pod.yaml" >/dev/null 2>&1 || true
  podman volume rm -f roistat-leads-data >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
. .ci/podman-conf.sh

manifest=deploy/kubernetes/sqlite/roistat-leads.yaml
port=18480
mkdir -m 0755 "$work/secrets"
python3 .ci/kube-play.py "$manifest" localhost/roistat-leads:ci "$work/secrets" "$port" \
  >"$work/pod.yaml"
chmod 0444 "$work/secrets"/*
podman kube play "$work/pod.yaml" >/dev/null

# The probes' own paths (the manifest's), on the port they name.
probe_path() { # livenessProbe|readinessProbe
  python3 - "$manifest" "$1" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
(sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
probe = sts["spec"]["template"]["spec"]["containers"][0][sys.argv[2]]["httpGet"]
assert probe["port"] == "http", probe
print(probe["path"])
PY
}
readiness=$(probe_path readinessProbe)
liveness=$(probe_path livenessProbe)
ready=
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$port$readiness" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
container=roistat-leads-roistat-leads
if [ -z "$ready" ]; then
  podman logs "$container" || true
  echo "kube play: readiness ($readiness) never passed" >&2; exit 1
fi
curl -fsS "http://127.0.0.1:$port$liveness" >/dev/null

password=$(cat "$work/secrets/roistat_password")
token=$(printf 'demo%s' "$password" | md5sum | cut -d' ' -f1)
answer=$(curl -fsS "http://127.0.0.1:$port/webhook?user=demo&token=$token&action=lead&id=kube-1")
[ "$answer" = '{"status":"ok","order_id":"kube-1"}' ] || { echo "kube play: $answer" >&2; exit 1; }
[ "$(podman exec "$container" sh -c 'id -u')" = 10001 ]
if podman exec "$container" sh -c 'touch /probe-write' 2>/dev/null; then
  echo "kube play: the root filesystem is writable" >&2; exit 1
fi
podman exec "$container" roistat-leads probe --config /etc/roistat-leads/roistat-leads.toml
podman stop -t 40 "$container" >/dev/null
[ "$(podman inspect "$container" --format '{{.State.ExitCode}}')" = 0 ]
podman kube down "$work/pod.yaml" >/dev/null
echo "kube play: ok"
