#!/usr/bin/env bash
# A CI step before `helm upgrade`: every node the chart's pods can land on must be able to
# pull every image, now, over its own pull path. Exit codes: 0 yes; 1 some node cannot;
# 3 some nodes could not be asked (no agent, no answer); 2 usage or configuration error.
#
# The CI identity needs examples/gates/rbac.yaml's rules. To keep the CI's own cluster token
# away from the nodes, mint an audience-bound token for the gate's ServiceAccount
# (--agent-service-account; needs `create serviceaccounts/token` on it) instead of showing the
# agents the kubeconfig's token.
set -euo pipefail
helm template shop ./charts/shop --namespace shop -f values-prod.yaml \
  | kubectl pullprobe preflight -f - \
      --agent-service-account pullprobe/pullprobe-preflight \
      --strict -o wide
