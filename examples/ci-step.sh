#!/usr/bin/env bash
# A CI gate before `helm upgrade`: every node each workload of the chart could land on can pull
# its images, now. The CI identity needs `create imagepreflights` in the namespace (the
# built-in `edit` role has it); nothing else, and its token never leaves the API server.
set -euo pipefail
NS="${NS:-shop}"

# With the CLI: one ImagePreflight per workload (its scheduling constraints copied), the
# answer printed as a node × image matrix; exit 0 all pull, 1 some node cannot, 3 unknown.
helm template shop ./chart --namespace "$NS" |
    kubectl pullprobe preflight -f - --namespace "$NS" --strict --timeout 3m

# Without the CLI: apply an ImagePreflight and wait for it as for anything else.
kubectl apply -f deploy/preflight/imagepreflight.yaml
kubectl -n "$NS" wait --for=condition=Ready imagepreflight/shop-web-images --timeout=3m
