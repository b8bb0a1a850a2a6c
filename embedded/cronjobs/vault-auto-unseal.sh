#!/bin/sh
# vault-auto-unseal: if Vault is sealed, unseal it with the key shares in $UNSEAL_KEY_FILE
# (the Secret mounted read-only; one share per line, hex or base64).
#
# The key never enters a shell variable, a command line or the output: each share goes from
# the file through grep/sed/tr pipes into curl's stdin (--data-binary @-).
# Needs: sh, curl, grep, sed, tr (busybox is enough).
# Env: VAULT_ADDR (e.g. http://vault.security.svc:8200), UNSEAL_KEY_FILE, VAULT_CACERT (optional).
# Exit: 0 unsealed / nothing to do, 1 Vault unreachable, key refused or too few shares.
set -eu
: "${VAULT_ADDR:?VAULT_ADDR is not set}"
: "${UNSEAL_KEY_FILE:?UNSEAL_KEY_FILE is not set}"
umask 077

log() { printf 'vault-auto-unseal: %s\n' "$*"; }

# field NAME JSON: a scalar field of Vault's compact JSON (no jq in small images).
field() { printf '%s' "$2" | sed -n "s/.*\"$1\":\"*\([^,}\"]*\).*/\1/p"; }

# vault_curl ARGS...: curl against Vault; prints the body, a newline and the HTTP status.
vault_curl() {
	if [ -n "${VAULT_CACERT:-}" ]; then
		set -- --cacert "$VAULT_CACERT" "$@"
	fi
	curl -sS --connect-timeout 5 --max-time 15 -w '\n%{http_code}' "$@"
}

# shares: the non-empty lines of the key file (read by grep from the file, never echoed).
shares() { grep '[^[:space:]]' "$UNSEAL_KEY_FILE"; }

if ! answer=$(vault_curl "$VAULT_ADDR/v1/sys/seal-status"); then
	log "cannot reach Vault at $VAULT_ADDR (is the vault pod running and its PVC attached?)"
	exit 1
fi
status=$(printf '%s' "$answer" | sed '$d' | tr -d '[:space:]')
code=$(printf '%s' "$answer" | tail -n 1)
if [ "$code" != 200 ]; then
	log "GET /v1/sys/seal-status answered HTTP $code"
	exit 1
fi

if [ "$(field initialized "$status")" = false ]; then
	log "Vault is not initialised: nothing to unseal (initialise it with rebox rebuild)"
	exit 0
fi
case "$(field sealed "$status")" in
false)
	log "Vault is unsealed: nothing to do"
	exit 0
	;;
true) ;;
*)
	log "unexpected answer from /v1/sys/seal-status (no sealed field)"
	exit 1
	;;
esac

if [ ! -r "$UNSEAL_KEY_FILE" ]; then
	log "cannot read the key file $UNSEAL_KEY_FILE (is the unseal Secret mounted?)"
	exit 1
fi
if grep -q '[^0-9A-Za-z+/=[:space:]]' "$UNSEAL_KEY_FILE"; then
	log "the key file holds characters that are neither hex nor base64: refusing to send it"
	exit 1
fi
count=$(shares | grep -c . || true)
if [ "$count" -eq 0 ]; then
	log "the key file $UNSEAL_KEY_FILE is empty"
	exit 1
fi

log "Vault is sealed (threshold $(field t "$status"), progress $(field progress "$status")); submitting up to $count share(s)"
i=0
while [ "$i" -lt "$count" ]; do
	i=$((i + 1))
	if ! answer=$(shares | sed -n "${i}p" | tr -d '[:space:]' |
		sed 's/^/{"key":"/; s/$/"}/' |
		vault_curl -X PUT -H 'Content-Type: application/json' --data-binary @- \
			"$VAULT_ADDR/v1/sys/unseal"); then
		log "cannot reach Vault at $VAULT_ADDR while unsealing"
		exit 1
	fi
	body=$(printf '%s' "$answer" | sed '$d' | tr -d '[:space:]')
	code=$(printf '%s' "$answer" | tail -n 1)
	if [ "$code" != 200 ]; then
		errors=$(printf '%s' "$body" | sed -n 's/.*"errors":\[\(.*\)\].*/\1/p')
		log "Vault refused share $i of $count (HTTP $code: ${errors:-no message}); check the Secret holds the current unseal key"
		exit 1
	fi
	if [ "$(field sealed "$body")" = false ]; then
		log "Vault unsealed with $i share(s)"
		exit 0
	fi
	log "share $i accepted (progress $(field progress "$body") of $(field t "$body"))"
done

log "Vault is still sealed after $count share(s): the Secret holds fewer shares than the threshold"
exit 1
