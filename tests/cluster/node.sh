#!/usr/bin/env bash
# A real single-node Kubernetes 1.20.2 on this machine, for the install tests: the local
# control plane (etcd + kube-apiserver, local-cluster.sh) plus containerd, kubelet,
# kube-proxy, kube-controller-manager, kube-scheduler and bridge CNI, all from Debian's
# packages and the binaries tests/cluster/install.sh builds and caches.
#
# Usage:
#   node.sh up DIR       start everything, wait until the node is Ready; DIR/node.env
#   node.sh down DIR     stop it all (by recorded pid) and put the host back as `up` found
#                        it; fails, printing the difference, if anything is left over
#   node.sh status DIR   which processes of DIR run
#   node.sh snapshot     print the host state that `down` restores (what `up` records)
#   node.sh ctr DIR ARGS...  ctr against DIR's containerd, namespace k8s.io
#
# Root only (it runs containerd and a kubelet). Only one node can run on the machine at a
# time (lock file /tmp/pvc-clone-guard-node.lock names the DIR that holds it).
#
# Network: nothing is routed off the machine. The node's address (10.245.0.1) sits on a
# bridge of our own with no ports (pcgnode0, created here and removed by `down`), which
# also carries the routes of the service range (10.0.0.0/24) and of the pod range
# (10.244.0.0/16; the node's pods are on cni0, 10.244.0.0/24), so that all three resolve to
# local devices (checked with `ip route get` at `up`), never to the default route. The API
# server binds and advertises only 10.245.0.1; the kubelet serves on it; kube-proxy,
# controller-manager and scheduler serve nothing beyond loopback. Pods get routes to the
# pod, service and node addresses only (no default route) and a resolv.conf naming
# 127.0.0.1 (there is no cluster DNS), so a pod cannot send anything off the machine.
#
# Host changes that `down` undoes, checked by comparing `node.sh snapshot` before `up`
# and after `down`: processes (by pid; containers killed and removed through containerd),
# mounts under DIR, network namespaces, the cni0 and pcgnode0 bridges and routes,
# iptables chains and rules (KUBE-*, CNI-*, and tables that did not exist before), the
# kubelet's cgroups (kubepods), sysctls (vm.overcommit_memory, vm.panic_on_oom,
# kernel.panic, kernel.panic_on_oops, kernel.keys.*, net.ipv4.ip_forward,
# route_localnet, bridge-nf-call-*, conntrack), and what the kubelet, containerd and CNI
# write outside DIR (/var/log/pods, /var/log/containers, /run/containerd, /run/netns,
# /var/lib/cni).
#
# Files in DIR after `up`: everything of local-cluster.sh (cluster.env, admin.kubeconfig,
# ...), node.env (NODE_NAME, NODE_IP, CONTAINERD_ADDRESS, KUBELET_ROOT), host-before.txt
# (the snapshot), containerd/ (config, root, state, socket), kubelet/ (root dir),
# cni/ (config, IPAM state), images/ (the pause image's OCI layout), one NAME.args,
# NAME.pid and NAME.log per component.
#
# Environment: NODE_TIMEOUT  seconds to wait for the node to be Ready (default 120)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=node
# shellcheck source=tests/cluster/lib.sh
. "$SCRIPT_DIR/lib.sh"
TIMEOUT="${NODE_TIMEOUT:-120}"

NODE_NAME=pcg-node
NODE_IP=10.245.0.1
NODE_LINK=pcgnode0
SERVICE_CIDR=10.0.0.0/24
CLUSTER_CIDR=10.244.0.0/16
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
PAUSE_IMAGE=registry.k8s.io/pause:3.4.1
LOCK=/tmp/pvc-clone-guard-node.lock
# The components in start order; `down` stops them in reverse.
COMPONENTS=(containerd kube-controller-manager kube-scheduler kube-proxy kubelet)

SYSCTLS=(
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.bridge.bridge-nf-call-arptables
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait
)
# Directories outside DIR that the kubelet (pod logs), containerd (shim sockets, network
# namespaces), CNI (result cache) and umount (libmount's /run/mount) write to; their contents
# are part of the snapshot.
HOST_PATHS=(/var/log/pods /var/log/containers /run/containerd /run/netns /var/lib/cni
  /var/lib/kubelet /var/lib/containerd /var/lib/dockershim /opt/containerd /opt/cni /etc/cni
  /run/mount)
# Processes of a node, counted by name in the snapshot (comm is cut at 15 characters).
NODE_COMMS="containerd containerd-shim kubelet kube-proxy kube-controller kube-scheduler pause runc"

# --- host state -----------------------------------------------------------------------

# Everything a node changes on the host, in a stable text form: `up` stores it, `down`
# compares. Counters, veth names and other churn are left out; nothing here is specific
# to a DIR.
snapshot() {
  local s v t f
  echo "== sysctl"
  for s in "${SYSCTLS[@]}"; do
    printf '%s = %s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo absent)"
  done
  for v in iptables ip6tables; do
    for t in filter nat mangle raw security; do
      echo "== $v -t $t"
      "$v-save" -t "$t" 2>/dev/null | sed -e '/^#/d' -e 's/ \[[0-9]*:[0-9]*\]$//' || true
    done
  done
  # iptables-nft: which tables exist (iptables-save prints empty built-in chains either way).
  echo "== nft tables"
  if command -v nft >/dev/null; then nft list tables 2>/dev/null | sort; fi
  echo "== links"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "== addresses"
  ip -o addr show | awk '{print $2, $3, $4}' | sort
  echo "== routes"
  ip -4 route show table all | sort
  ip -6 route show | sed 's/ expires [0-9]*sec//' | sort
  echo "== netns"
  ip netns list 2>/dev/null | sort
  echo "== mounts"
  findmnt -rn -o TARGET,FSTYPE | sort
  echo "== cgroups"
  for f in /sys/fs/cgroup/*/; do
    find "$f" -mindepth 1 -maxdepth 1 -type d -printf "$f%f\n" 2>/dev/null
  done | sort
  echo "== paths"
  for f in "${HOST_PATHS[@]}"; do
    if [ -e "$f" ]; then
      echo "$f"
      find "$f" -mindepth 1 -maxdepth 1 -printf "$f/%f\n" 2>/dev/null | sort
    fi
  done
  for f in /run /var/lib /var/log /opt; do
    find "$f" -mindepth 1 -maxdepth 1 -printf "$f/%f\n" 2>/dev/null | sort
  done
  echo "== processes"
  ps -e -o stat=,comm= | awk -v names="$NODE_COMMS" '
    BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
    $1 !~ /^Z/ && want[$2] { count[$2]++ }
    END { for (c in count) print c, count[c] }' | sort
}

# --- processes (by recorded pid, never by name: lib.sh) -------------------------------

# Processes whose command line names DIR's containerd socket (the shims, which outlive
# containerd by design) and the containers' processes they still hold.
kill_dir_processes() {
  local dir=$1 p pid
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" != $$ ] || continue
    if { tr '\0' '\n' <"$p/cmdline"; } 2>/dev/null | grep -xF -- "$dir/containerd/containerd.sock" >/dev/null; then
      log "killing leftover shim $pid ($(cat "$p/comm" 2>/dev/null))"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

ctr_dir() {
  local dir=$1
  shift
  ctr --address "$dir/containerd/containerd.sock" --namespace k8s.io "$@"
}

# --- lock -----------------------------------------------------------------------------

# The lock file holds the DIR of the running node; flock serialises the check and update.
take_lock() {
  local dir=$1 owner
  exec 9>>"$LOCK.flock"
  flock -w 30 9 || die "cannot take $LOCK.flock"
  owner="$(cat "$LOCK" 2>/dev/null || true)"
  if [ -n "$owner" ] && [ "$owner" != "$dir" ]; then
    die "a node is already up in $owner (only one per machine): run '$0 down $owner' first"
  fi
  echo "$dir" >"$LOCK"
  flock -u 9
}

release_lock() {
  local dir=$1
  exec 9>>"$LOCK.flock"
  flock -w 30 9 || die "cannot take $LOCK.flock"
  if [ "$(cat "$LOCK" 2>/dev/null || true)" = "$dir" ]; then rm -f "$LOCK"; fi
  flock -u 9
}

# --- configuration ----------------------------------------------------------------------

kubeconfig_for() { # kubeconfig_for DIR USER FILE
  local dir=$1 user=$2 file=$3 token
  token="$(token_of "$dir" "$user")"
  [ -n "$token" ] || die "no token for $user in $dir/tokens.csv"
  write_kubeconfig "$dir" "$file" "$user" "$token" "$(sed -n 's/^APISERVER_URL=//p' "$dir/cluster.env")"
}

write_containerd_config() {
  local dir=$1 c="$1/containerd"
  mkdir -p "$c/root" "$c/state" "$c/opt" "$dir/cni/net.d" "$dir/cni/ipam"
  # restrict_oom_score_adj: this VM withholds CAP_SYS_RESOURCE, so runc cannot lower a
  # container's oom_score_adj below containerd's own ("can't get final child's PID from
  # pipe" otherwise). SystemdCgroup false: the kubelet uses cgroupfs (no systemd here).
  # Every path is under DIR; runc's state too (Root). Plugins that would write elsewhere
  # or need kernel features we do not use are disabled.
  cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$c/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1
EOF
  # Bridge cni0 with host-local addresses from the node's pod range; the pods' only routes
  # are to the service range and the node address, through cni0 (no default route). No
  # masquerading by CNI (kube-proxy masquerades what it must); hairpin for a pod that
  # reaches itself through a Service.
  cat >"$dir/cni/net.d/10-pvc-clone-guard.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "pvc-clone-guard-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}, {"dst": "$NODE_IP/32"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  printf '%s\n' "$(command -v containerd)" --config "$c/config.toml" >"$dir/containerd.args"
}

write_node_configs() {
  local dir=$1 k="$KUBE_DIR"
  kubeconfig_for "$dir" "system:node:$NODE_NAME" "$dir/kubelet.kubeconfig"
  kubeconfig_for "$dir" system:kube-proxy "$dir/kube-proxy.kubeconfig"
  kubeconfig_for "$dir" system:kube-controller-manager "$dir/kube-controller-manager.kubeconfig"
  kubeconfig_for "$dir" system:kube-scheduler "$dir/kube-scheduler.kubeconfig"
  echo "nameserver 127.0.0.1" >"$dir/resolv.conf"
  mkdir -p "$dir/kubelet"

  # Serves on the node address only (read-only port off); the API server authenticates
  # with its client certificate, everyone else through the API (webhook authn/authz).
  # syncFrequency 10s: a changed Secret reaches the pods' volumes within ~10-20 s (the
  # default 1m is what a production kubelet does; the test only waits less).
  # Eviction thresholds low: the test must not depend on this machine's free disk.
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: $dir/resolv.conf
syncFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
EOF
  printf '%s\n' "$k/kubelet" \
    "--config=$dir/kubelet.yaml" \
    "--kubeconfig=$dir/kubelet.kubeconfig" \
    "--root-dir=$dir/kubelet" \
    "--cert-dir=$dir/kubelet/pki" \
    --container-runtime=remote \
    "--container-runtime-endpoint=unix://$dir/containerd/containerd.sock" \
    "--image-service-endpoint=unix://$dir/containerd/containerd.sock" \
    "--pod-infra-container-image=$PAUSE_IMAGE" \
    "--hostname-override=$NODE_NAME" \
    "--node-ip=$NODE_IP" \
    --v=1 \
    >"$dir/kubelet.args"

  # iptables mode; node ports only on the node address; health and metrics on loopback;
  # conntrack settings left as they are (0 = do not touch).
  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  printf '%s\n' "$k/kube-proxy" "--config=$dir/kube-proxy.yaml" >"$dir/kube-proxy.args"

  # No listeners at all (--port=0 --secure-port=0); one instance, no leader election.
  printf '%s\n' "$k/kube-controller-manager" \
    "--kubeconfig=$dir/kube-controller-manager.kubeconfig" \
    "--service-account-private-key-file=$dir/sa.key" \
    "--root-ca-file=$dir/ca.crt" \
    --use-service-account-credentials=true \
    --leader-elect=false \
    --port=0 --secure-port=0 \
    "--service-cluster-ip-range=$SERVICE_CIDR" \
    "--cluster-cidr=$CLUSTER_CIDR" \
    --feature-gates=AnyVolumeDataSource=true \
    >"$dir/kube-controller-manager.args"
  printf '%s\n' "$k/kube-scheduler" \
    "--kubeconfig=$dir/kube-scheduler.kubeconfig" \
    --leader-elect=false \
    --port=0 --secure-port=0 \
    >"$dir/kube-scheduler.args"
}

# The pause image from scratch: the static pause of the same source tree (install.sh),
# user 65535 and entrypoint /pause as upstream's; packed with umoci, imported under the
# name containerd's sandbox_image says, never pulled.
import_pause() {
  local dir=$1 layout="$1/images/pause"
  rm -rf "$layout"
  mkdir -p "$dir/images"
  umoci init --layout "$layout"
  umoci new --image "$layout:3.4.1"
  umoci insert --image "$layout:3.4.1" "$KUBE_DIR/pause" /pause
  umoci config --image "$layout:3.4.1" --config.entrypoint /pause --config.user 65535:65535 \
    --author pvc-clone-guard-tests
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$dir/images/pause.tar" .
  ctr_dir "$dir" images import --base-name registry.k8s.io/pause "$dir/images/pause.tar" >/dev/null
  ctr_dir "$dir" images ls -q | grep -xF "$PAUSE_IMAGE" >/dev/null || die "pause image not imported as $PAUSE_IMAGE"
}

# --- network ----------------------------------------------------------------------------

network_up() {
  ip link show "$NODE_LINK" >/dev/null 2>&1 && die "$NODE_LINK already exists"
  ip link show cni0 >/dev/null 2>&1 && die "cni0 already exists"
  local r
  for r in "$SERVICE_CIDR" "$CLUSTER_CIDR"; do
    [ -z "$(ip -4 route show "$r")" ] || die "a route for $r exists already: $(ip -4 route show "$r")"
  done
  ip link add "$NODE_LINK" type bridge
  ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
  ip route add "$SERVICE_CIDR" dev "$NODE_LINK"
  ip route add "$CLUSTER_CIDR" dev "$NODE_LINK"
  # Nothing of the node may take the default route.
  local a route
  for a in "$NODE_IP" 10.0.0.1 10.0.0.200 "$POD_GATEWAY" 10.244.0.10 10.244.200.1; do
    route="$(ip -o route get "$a")"
    case "$route" in
      *" via "* | *" dev eth"* | *" dev en"*) die "$a would leave the machine: $route" ;;
    esac
  done
  # bridge-nf: kube-proxy's rules must see traffic between pods on cni0.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

network_down() {
  local dir=$1 name
  # Network namespaces made while the node ran (containerd's cni-*): deleting one removes
  # its end of the veth pair, and so the pair.
  while read -r name _; do
    [ -n "$name" ] || continue
    section netns "$dir/host-before.txt" | awk '{print $1}' | grep -xF "$name" >/dev/null && continue
    log "deleting network namespace $name"
    ip netns delete "$name" || true
  done < <(ip netns list 2>/dev/null)
  ip link show cni0 >/dev/null 2>&1 && ! grep -qx cni0 <(section links "$dir/host-before.txt") &&
    ip link del cni0
  ip link show "$NODE_LINK" >/dev/null 2>&1 && ip link del "$NODE_LINK"
  return 0
}

# Removes every rule that jumps to a KUBE-* or CNI-* chain, then those chains, for IPv4 and
# IPv6; then the tables that did not exist before and are empty now.
iptables_down() {
  local dir=$1 v t script chains
  for v in iptables ip6tables; do
    for t in filter nat mangle raw security; do
      script="$("$v-save" -t "$t" 2>/dev/null)" || continue
      chains="$(sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p' <<<"$script")"
      # Nothing of ours here: do not touch the table (a restore would create it).
      [ -n "$chains" ] || continue
      {
        echo "*$t"
        grep -E '^-A ' <<<"$script" | grep -Ev '^-A (KUBE|CNI)-' |
          grep -E -- '-[jg] (KUBE|CNI)-' | sed 's/^-A /-D /' || true
        for c in $chains; do echo "-F $c"; done
        for c in $chains; do echo "-X $c"; done
        echo COMMIT
      } | "$v-restore" --noflush || log "warning: $v -t $t cleanup failed"
    done
  done
  command -v nft >/dev/null || return 0
  local family name
  while read -r _ family name; do
    [ -n "$name" ] || continue
    # Created by the node (absent from the snapshot) and holding no rule now.
    grep -qxF "table $family $name" <(section "nft tables" "$dir/host-before.txt") && continue
    v=iptables
    [ "$family" = ip6 ] && v=ip6tables
    case "$family" in ip | ip6) ;; *) continue ;; esac
    if "$v-save" -t "$name" 2>/dev/null | grep '^-A ' >/dev/null; then
      log "warning: table $family $name still has rules; left in place"
      continue
    fi
    nft delete table "$family" "$name" || true
  done < <(nft list tables 2>/dev/null)
}

# section NAME FILE: the lines of snapshot section NAME.
section() {
  awk -v h="== $1" '$0 == h { on = 1; next } /^== / { on = 0 } on' "$2"
}

# --- subcommands ------------------------------------------------------------------------

cmd_up() {
  local dir start
  start=$SECONDS
  [ "$(id -u)" -eq 0 ] || die "a node needs root (containerd, kubelet, iptables)"
  mkdir -p "$1"
  dir="$(cd "$1" && pwd)"
  [ ${#dir} -le 60 ] || die "DIR $dir is too long for containerd's socket paths (60 characters at most)"
  bash "$SCRIPT_DIR/install.sh"
  local b
  for b in kube-apiserver kubelet kube-proxy kube-controller-manager kube-scheduler pause; do
    [ -x "$KUBE_DIR/$b" ] || die "$KUBE_DIR/$b missing (run tests/cluster/install.sh)"
  done
  for b in containerd ctr runc umoci conntrack iptables ip6tables; do
    command -v "$b" >/dev/null || die "$b not found (run tests/cluster/install.sh)"
  done
  take_lock "$dir"
  rm -f "$dir/host-before.txt"
  local qdir
  qdir="$(printf %q "$dir")"
  # A failed `up` leaves nothing behind (and releases the lock).
  # shellcheck disable=SC2064
  trap "log 'up failed: tearing down'; '$0' down $qdir >&2 || true" EXIT

  for b in "${COMPONENTS[@]}"; do
    live_pid "$dir" "$b" >/dev/null && die "$b of $dir is already running"
  done
  ip link show cni0 >/dev/null 2>&1 && die "cni0 exists: another node (or a CNI) uses this machine"
  for b in /sys/fs/cgroup/*/kubepods; do
    [ -e "$b" ] && die "$b exists: another kubelet uses this machine"
  done
  snapshot >"$dir/host-before.txt"

  network_up
  write_containerd_config "$dir"
  start_process "$dir" containerd
  local i
  for ((i = 0; i < 100; i++)); do
    ctr_dir "$dir" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  ctr_dir "$dir" version >/dev/null || die "containerd does not answer on $dir/containerd/containerd.sock"
  import_pause "$dir"

  LOCAL_CLUSTER_NODE_IP=$NODE_IP LOCAL_CLUSTER_SKIP_INSTALL=1 "$SCRIPT_DIR/local-cluster.sh" up "$dir"
  write_node_configs "$dir"
  for b in kube-controller-manager kube-scheduler kube-proxy kubelet; do
    start_process "$dir" "$b"
  done
  {
    printf 'NODE_NAME=%q\n' "$NODE_NAME"
    printf 'NODE_IP=%q\n' "$NODE_IP"
    printf 'CONTAINERD_ADDRESS=%q\n' "$dir/containerd/containerd.sock"
    printf 'KUBELET_ROOT=%q\n' "$dir/kubelet"
  } >"$dir/node.env"
  wait_node "$dir"
  trap - EXIT
  log "node $NODE_NAME Ready in $((SECONDS - start))s ($NODE_IP; control plane, containerd, kubelet, kube-proxy, controller-manager, scheduler)"
  log "  kubectl --kubeconfig $dir/admin.kubeconfig get nodes"
  log "  stop: $0 down $dir"
}

wait_node() {
  local dir=$1 deadline=$((SECONDS + TIMEOUT)) ready name
  local -a k=(kubectl --kubeconfig "$dir/admin.kubeconfig")
  while :; do
    for name in "${COMPONENTS[@]}"; do
      live_pid "$dir" "$name" >/dev/null || {
        tail -n 30 "$dir/$name.log" >&2
        die "$name exited (log: $dir/$name.log)"
      }
    done
    ready="$("${k[@]}" get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
    # Ready, the default ServiceAccount has its token (controller-manager), and kube-proxy
    # has written the `kubernetes` Service's rules.
    if [ "$ready" = True ] &&
      [ -n "$("${k[@]}" get serviceaccount default -o 'jsonpath={.secrets[0].name}' 2>/dev/null)" ] &&
      iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep 'default/kubernetes:https' >/dev/null; then
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || {
      tail -n 20 "$dir/kubelet.log" >&2
      die "node not Ready after ${TIMEOUT}s"
    }
    sleep 0.5
  done
}

cmd_down() {
  local dir i name id
  [ -d "$1" ] || {
    log "$1 does not exist; nothing to stop"
    return 0
  }
  dir="$(cd "$1" && pwd)"
  [ "$(id -u)" -eq 0 ] || die "a node needs root"
  if [ ! -f "$dir/host-before.txt" ]; then
    # `up` stopped before it changed anything.
    release_lock "$dir"
    log "$dir has no host snapshot: nothing was started there"
    return 0
  fi
  # Controllers first (nothing recreates pods), then the kubelet, kube-proxy.
  for ((i = ${#COMPONENTS[@]} - 1; i >= 1; i--)); do
    stop_process "$dir" "${COMPONENTS[i]}"
  done
  # Every container and sandbox, through containerd: killed, deleted.
  if live_pid "$dir" containerd >/dev/null; then
    for id in $(ctr_dir "$dir" tasks ls -q 2>/dev/null); do
      ctr_dir "$dir" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_dir "$dir" tasks ls -q 2>/dev/null); do
      for ((i = 0; i < 50; i++)); do
        ctr_dir "$dir" tasks delete "$id" >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
    for id in $(ctr_dir "$dir" containers ls -q 2>/dev/null); do
      ctr_dir "$dir" containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_process "$dir" containerd
  kill_dir_processes "$dir"
  "$SCRIPT_DIR/local-cluster.sh" down "$dir" >/dev/null 2>&1 || true

  network_down "$dir"
  # With its bridge gone, the node's address would route to the default route: leave no
  # kubeconfig that dials it (`up` writes them again).
  rm -f "$dir"/*.kubeconfig
  # Mounts under DIR (secret volumes, rootfs, shm), deepest first.
  local target
  while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" || true
  done < <(findmnt -rn -o TARGET | grep -F "$dir/" | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)
  iptables_down "$dir"
  # The kubelet's cgroups: every kubepods tree, leaves first, after killing any process
  # still in them (a container whose shim was killed).
  local d pid
  for d in /sys/fs/cgroup/*/kubepods; do
    [ -d "$d" ] || continue
    grep -qxF "$d" <(section cgroups "$dir/host-before.txt") && continue
    for pid in $(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null); do
      log "killing pid $pid left in $d"
      kill -KILL "$pid" 2>/dev/null || true
    done
    for i in 1 2 3 4 5; do
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [ -d "$d" ] || break
      sleep 0.5
    done
    [ -d "$d" ] && log "warning: $d could not be removed"
  done
  # Sysctls as recorded.
  local line key value
  while IFS= read -r line; do
    key="${line%% = *}"
    value="${line#* = }"
    [ "$value" = absent ] && continue
    [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] || sysctl -qw "$key=$value" || true
  done < <(section sysctl "$dir/host-before.txt")
  # Paths outside DIR: whole directories that did not exist, new entries of those that did.
  local path entry
  for path in "${HOST_PATHS[@]}"; do
    [ -e "$path" ] || continue
    if ! grep -qxF "$path" <(section paths "$dir/host-before.txt"); then
      rm -rf "$path"
      continue
    fi
    while read -r entry; do
      grep -qxF "$entry" <(section paths "$dir/host-before.txt") || rm -rf "$entry"
    done < <(find "$path" -mindepth 1 -maxdepth 1 -printf "$path/%f\n")
  done
  release_lock "$dir"

  if ! diff -u "$dir/host-before.txt" <(snapshot) >"$dir/host-diff.txt"; then
    cat "$dir/host-diff.txt" >&2
    die "the host is not as $dir/host-before.txt recorded it (diff above, in $dir/host-diff.txt)"
  fi
  log "node in $dir is down; the host is as it was before 'up'"
}

cmd_status() {
  local dir rc=0
  dir="$(cd "$1" && pwd)"
  status_of "$dir" "${COMPONENTS[@]}" || rc=1
  "$SCRIPT_DIR/local-cluster.sh" status "$dir" || rc=1
  return $rc
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    up) [ $# -eq 2 ] && cmd_up "$2" ;;
    down) [ $# -eq 2 ] && cmd_down "$2" ;;
    status) [ $# -eq 2 ] && cmd_status "$2" ;;
    snapshot) [ $# -eq 1 ] && snapshot ;;
    ctr)
      [ $# -ge 3 ] || die "usage: node.sh ctr DIR ARGS..."
      local dir
      dir="$(cd "$2" && pwd)"
      shift 2
      ctr_dir "$dir" "$@"
      ;;
    *)
      sed -n '/^# Usage:/,/^# Root only/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
