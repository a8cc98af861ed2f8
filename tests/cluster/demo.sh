#!/usr/bin/env bash
# The main job, for a first look: a local control plane with pvc-clone-guard registered,
# a bound 10Gi CSI source claim, then one clone refused and one admitted by `kubectl create`.
#
#   tests/cluster/demo.sh [DIR]    (DIR defaults to /tmp/pvc-clone-guard-demo)
#
# Everything keeps running afterwards so you can try your own clones; the last lines say
# how to point kubectl at it and how to stop it. Exits non-zero if the webhook did not
# refuse the bad clone or did not admit the good one.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${1:-${TMPDIR:-/tmp}/pvc-clone-guard-demo}"

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

if [ -f "$DIR/webhook.pid" ] || [ -f "$DIR/kube-apiserver.pid" ]; then
  "$SCRIPT_DIR/dev-env.sh" down "$DIR" >/dev/null 2>&1 || true
fi
rm -rf "$DIR"
say "Starting etcd, kube-apiserver 1.20 and pvc-clone-guard (the first run builds kube-apiserver: ~7 min)"
"$SCRIPT_DIR/dev-env.sh" up "$DIR" "$SCRIPT_DIR/e2e-config.yaml"
export KUBECONFIG="$DIR/admin.kubeconfig"

say "Sample objects: StorageClass gp3 (ebs.csi.aws.com), a bound 10Gi source claim demo/data"
"$SCRIPT_DIR/local-cluster.sh" namespace "$DIR" demo
kubectl apply -f - <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: gp3}
provisioner: ebs.csi.aws.com
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-data}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: gp3
  csi: {driver: ebs.csi.aws.com, volumeHandle: vol-0123456789}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: demo}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: gp3
  resources: {requests: {storage: 10Gi}}
EOF
"$SCRIPT_DIR/local-cluster.sh" bind "$DIR" demo data pv-data
kubectl get pvc -n demo

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
cat <<EOF
  export KUBECONFIG=$DIR/admin.kubeconfig
  kubectl get pvc -n demo
  kubectl create -f $DIR/bad-clone.yaml          # edit it and try again
  webhook log:     $DIR/webhook.log
  metrics:         curl -s \$(grep WEBHOOK_ADMIN_URL $DIR/webhook.env | cut -d= -f2)/metrics
Stop everything with:
  $SCRIPT_DIR/dev-env.sh down $DIR
EOF
