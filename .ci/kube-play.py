"""Renders deploy/kubernetes/sqlite for `podman kube play`, which runs Pods (not
StatefulSets) and cannot mount a Secret as a volume: the StatefulSet's pod template
becomes a Pod, its volume claim template a PersistentVolumeClaim (a podman volume),
and the Secret's keys files in a directory mounted read-only where the Secret would
be. Everything else (the image's user, the securityContext, the ConfigMap, the
probes' paths and ports, the arguments) is the manifest's own. The http port is
published on the host at the port given, for the checks.

usage: kube-play.py MANIFEST IMAGE SECRETS_DIR HOST_PORT > pod.yaml
"""
import sys

import yaml

manifest, image, secrets_dir, host_port = sys.argv[1:5]
docs = [d for d in yaml.safe_load_all(open(manifest)) if d]
by_kind = {}
for doc in docs:
    by_kind.setdefault(doc["kind"], []).append(doc)
(statefulset,) = by_kind["StatefulSet"]
(secret,) = by_kind["Secret"]

# The Secret's keys as files, as Kubernetes would mount them.
for key, value in secret.get("stringData", {}).items():
    with open(f"{secrets_dir}/{key}", "w") as f:
        f.write(value)

template = statefulset["spec"]["template"]
spec = template["spec"]
for container in spec["containers"]:
    container["image"] = image
    for port in container["ports"]:
        if port["name"] == "http":
            port["hostPort"] = int(host_port)
            port["hostIP"] = "127.0.0.1"
claims = []
for claim in statefulset["spec"].get("volumeClaimTemplates", []):
    name = f"{statefulset['metadata']['name']}-{claim['metadata']['name']}"
    claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": name}, "spec": claim["spec"]})
    spec["volumes"].append({"name": claim["metadata"]["name"],
                            "persistentVolumeClaim": {"claimName": name}})
for volume in spec["volumes"]:
    if "secret" in volume:
        del volume["secret"]
        volume["hostPath"] = {"path": secrets_dir, "type": "Directory"}
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": statefulset["metadata"]["name"],
                    "labels": template["metadata"]["labels"]},
       "spec": spec}
yaml.safe_dump_all(by_kind["ConfigMap"] + claims + [pod], sys.stdout, sort_keys=False)
