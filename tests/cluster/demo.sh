#!/usr/bin/env bash
# The main job, for a first look: a bound 10Gi CSI source claim, then one clone refused and
# one admitted by `kubectl create`.
#
#   tests/cluster/demo.sh [DIR]               a local control plane (etcd + kube-apiserver
#                                             1.20) with the webhook registered on loopback;
#                                             seconds once built
#   sudo tests/cluster/demo.sh --node [DIR]   installed as a user installs it: a real
#                                             single-node Kubernetes 1.20 (node.sh), the
#                                             image built here (image.sh), certificates from
#                                             `pvc-clone-guard certs`, the shipped
#                                             self-managed overlay applied with `kubectl
#                                             apply -k`, and the API server calling both
#                                             pods through the Service; about a minute once
#                                             built
#
# DIR defaults to /tmp/pvc-clone-guard-demo (/tmp/pcg-demo with --node: containerd's socket
# paths must stay short). Everything keeps running afterwards so you can try your own
# clones; the last lines say how to point kubectl at it and how to stop it. Exits non-zero
# if the webhook did not refuse the bad clone or did not admit the good one.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
LOG_TAG=demo
# shellcheck source=tests/cluster/lib.sh
. "$SCRIPT_DIR/lib.sh"
NODE=0
if [ "${1:-}" = --node ]; then
  NODE=1
  shift
fi
if [ "$NODE" = 1 ]; then
  DIR="${1:-/tmp/pcg-demo}"
else
  DIR="${1:-${TMPDIR:-/tmp}/pvc-clone-guard-demo}"
fi

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
# Prints a command as a user would type it, then runs it.
run() {
  echo "\$ $*"
  "$@"
}

# The local control plane: etcd, kube-apiserver and the webhook as a process on loopback,
# registered with a `url`; no controller-manager, so the test binds the source itself.
start_local() {
  if [ -f "$DIR/webhook.pid" ] || [ -f "$DIR/kube-apiserver.pid" ]; then
    "$SCRIPT_DIR/dev-env.sh" down "$DIR" >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
  say "Starting etcd, kube-apiserver 1.20 and pvc-clone-guard (the first run builds kube-apiserver: ~7 min)"
  "$SCRIPT_DIR/dev-env.sh" up "$DIR" "$SCRIPT_DIR/e2e-config.yaml"
  export KUBECONFIG="$DIR/admin.kubeconfig"
  "$SCRIPT_DIR/local-cluster.sh" namespace "$DIR" demo
}

# A real node, and the install as the README's Install section says it, for Kubernetes 1.20.
start_node() {
  [ "$(id -u)" -eq 0 ] || die "--node starts containerd and a kubelet: run it as root"
  if [ -f "$DIR/host-before.txt" ]; then
    "$SCRIPT_DIR/node.sh" down "$DIR" >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
  say "Starting a single-node Kubernetes 1.20 (containerd, kubelet, kube-proxy, controller-manager, scheduler; the first run builds them: ~12 min)"
  "$SCRIPT_DIR/node.sh" up "$DIR"
  export KUBECONFIG="$DIR/admin.kubeconfig"

  say "1. The image: the release binary and the libraries it links, imported into the node's containerd as pvc-clone-guard:0.1.0"
  "$SCRIPT_DIR/image.sh" import "$DIR"

  # A copy of manifests/, so that the certificates never land in the repository.
  local install="$DIR/install"
  mkdir -p "$install"
  cp -r "$REPO/manifests" "$install/"
  find "$install/manifests/overlays/self-managed/certs" -type f ! -name README.md -delete
  cd "$install"
  say "2. The certificates, with the webhook's own certs command"
  run "$(release_binary)" certs --out-dir manifests/overlays/self-managed/certs

  say "3. Apply the shipped self-managed overlay, with the component for Kubernetes 1.20"
  cat >kustomization.yaml <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [manifests/overlays/self-managed]
components: [manifests/components/kubernetes-1.20]
EOF
  echo "\$ cat kustomization.yaml"
  cat kustomization.yaml
  run kubectl label namespace kube-system kubernetes.io/metadata.name=kube-system
  run kubectl apply -k .
  run kubectl -n pvc-clone-guard rollout status deployment/pvc-clone-guard --timeout=300s
  run kubectl -n pvc-clone-guard get pods -o wide
  echo "The API server calls them through the Service, as shipped:"
  run kubectl get validatingwebhookconfiguration pvc-clone-guard \
    -o jsonpath='{range .webhooks[*]}{.name}: service {.clientConfig.service.namespace}/{.clientConfig.service.name}:{.clientConfig.service.port}{"\n"}{end}'
  run kubectl create namespace demo
}

# A bound source claim demo/data (10Gi, class gp3 of ebs.csi.aws.com). On the real node the
# controller-manager binds the pre-bound volume; on the local control plane the test's
# bind helper does what it would.
create_source() {
  say "Sample objects: StorageClass gp3 (ebs.csi.aws.com), a bound 10Gi source claim demo/data"
  source_yaml demo gp3 pv-data data | kubectl apply -f -
  if [ "$NODE" = 1 ]; then
    local i
    for ((i = 0; i < 120; i++)); do
      [ "$(kubectl get pvc data -n demo -o jsonpath='{.status.phase}')" = Bound ] && break
      sleep 0.5
    done
  else
    "$SCRIPT_DIR/local-cluster.sh" bind "$DIR" demo data pv-data
  fi
  kubectl get pvc -n demo
}

if [ "$NODE" = 1 ]; then start_node; else start_local; fi
create_source

cd "$DIR"
cat >bad-clone.yaml <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-copy, namespace: demo}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: gp3
  volumeMode: Block
  dataSource: {kind: PersistentVolumeClaim, name: data}
  resources: {requests: {storage: 5Gi}}
EOF
sed -e 's/volumeMode: Block/volumeMode: Filesystem/' -e 's/storage: 5Gi/storage: 10Gi/' bad-clone.yaml >good-clone.yaml

say "A clone that the CSI provisioner would leave Pending forever (Block, 5Gi from a Filesystem 10Gi source):"
echo "\$ kubectl create -f bad-clone.yaml"
if kubectl create -f bad-clone.yaml; then
  echo "the bad clone was admitted: the webhook is not working" >&2
  exit 1
fi

say "The same clone, fixed as the message says:"
echo "\$ kubectl create -f good-clone.yaml"
kubectl create -f good-clone.yaml

say "It keeps running. Try your own clones:"
if [ "$NODE" = 1 ]; then
  cat <<EOF
  export KUBECONFIG=$DIR/admin.kubeconfig
  kubectl get pvc -n demo
  kubectl create -f $DIR/bad-clone.yaml          # edit it and try again
  webhook logs:    kubectl -n pvc-clone-guard logs deployment/pvc-clone-guard
  the install:     $DIR/install (kustomization.yaml, manifests/, certificates)
Stop everything (and put the host back as it was) with:
  $SCRIPT_DIR/node.sh down $DIR
EOF
else
  cat <<EOF
  export KUBECONFIG=$DIR/admin.kubeconfig
  kubectl get pvc -n demo
  kubectl create -f $DIR/bad-clone.yaml          # edit it and try again
  webhook log:     $DIR/webhook.log
  metrics:         curl -s \$(grep WEBHOOK_ADMIN_URL $DIR/webhook.env | cut -d= -f2)/metrics
Stop everything with:
  $SCRIPT_DIR/dev-env.sh down $DIR
EOF
fi
