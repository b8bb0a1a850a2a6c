#!/bin/sh
# eso-recovery: when Vault is unsealed but the ClusterSecretStore $STORE is not Ready,
# rollout-restart the ESO Deployments (the controller would otherwise wait for its next
# store re-validation, up to ~5 minutes). Skips while a previous restart is still rolling out.
# Needs: sh, curl, kubectl, tr. RBAC: get the store; get+patch the named Deployments.
# Env: VAULT_ADDR, STORE, NAMESPACE, DEPLOYMENTS (space-separated), VAULT_CACERT (optional).
# Exit: 0 nothing to do or restart requested, non-zero when kubectl fails.
set -eu
: "${VAULT_ADDR:?VAULT_ADDR is not set}"
: "${STORE:?STORE is not set}"
: "${NAMESPACE:?NAMESPACE is not set}"
: "${DEPLOYMENTS:?DEPLOYMENTS is not set}"

log() { printf 'eso-recovery: %s\n' "$*"; }

cacert=
if [ -n "${VAULT_CACERT:-}" ]; then
	cacert="--cacert=$VAULT_CACERT"
fi
if ! status=$(curl -sS --connect-timeout 5 --max-time 15 $cacert "$VAULT_ADDR/v1/sys/seal-status"); then
	log "cannot reach Vault at $VAULT_ADDR: nothing to do"
	exit 0
fi
status=$(printf '%s' "$status" | tr -d '[:space:]')
case "$status" in
*'"sealed":false'*) ;;
*)
	log "Vault is sealed or not initialised: nothing to do (vault-auto-unseal handles it)"
	exit 0
	;;
esac

ready=$(kubectl get clustersecretstore "$STORE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')
if [ "$ready" = True ]; then
	log "ClusterSecretStore $STORE is Ready: nothing to do"
	exit 0
fi

# A restart still rolling out: let it finish (kubectl's rollout-status rules).
for d in $DEPLOYMENTS; do
	state=$(kubectl -n "$NAMESPACE" get deployment "$d" -o 'jsonpath={.metadata.generation}/{.status.observedGeneration}/{.spec.replicas}/{.status.updatedReplicas}/{.status.availableReplicas}/{.status.replicas}')
	old_ifs=$IFS
	IFS=/
	# shellcheck disable=SC2086
	set -- $state
	IFS=$old_ifs
	generation=${1:-0} observed=${2:-0} want=${3:-1} updated=${4:-0} available=${5:-0} total=${6:-0}
	if [ "$observed" -lt "$generation" ] || [ "$updated" -lt "$want" ] ||
		[ "$total" -gt "$updated" ] || [ "$available" -lt "$updated" ]; then
		log "deployment $d is still rolling out: waiting for it before restarting again"
		exit 0
	fi
done

log "ClusterSecretStore $STORE is not Ready (status: ${ready:-unknown}) while Vault is unsealed: restarting $DEPLOYMENTS"
targets=
for d in $DEPLOYMENTS; do
	targets="$targets deployment/$d"
done
# shellcheck disable=SC2086
kubectl -n "$NAMESPACE" rollout restart $targets
