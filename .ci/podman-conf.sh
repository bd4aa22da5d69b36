# Sourced by the container checks: points podman at a containers.conf in "$work"
# with runc and cgroupfs (crun refuses this machine's hybrid cgroup layout) and
# default ulimits that may be set here (raising limits is not permitted).
cat >"$work/containers.conf" <<'CONF'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
CONF
export CONTAINERS_CONF="$work/containers.conf"
