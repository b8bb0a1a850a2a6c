#!/bin/bash
# timedatectl stand-in for rebox lab servers (no systemd-timesyncd inside the lab): the lab's
# clock is the host's, so it reports NTP as synchronised. Supports `show [-p PROP] [--value]`,
# `status` and `set-ntp BOOL`.
case ${1:-status} in
  show)
    if [[ " $* " == *" --value "* ]]; then echo yes; else printf 'NTP=yes\nNTPSynchronized=yes\n'; fi ;;
  status) printf '               Local time: %s\nSystem clock synchronized: yes\n              NTP service: active\n' "$(date)" ;;
  set-ntp) ;;
  *) echo "lab timedatectl: '$1' is not supported by the lab's stand-in" >&2; exit 1 ;;
esac
