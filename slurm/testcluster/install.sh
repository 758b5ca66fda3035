#!/usr/bin/env bash
# Install Debian's SLURM (slurm-wlm: slurmctld + slurmd + client tools) and munge,
# for the one-node test cluster. Idempotent: does nothing if slurmctld is present.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
# Debian puts daemons in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

if have slurmctld && have slurmd && have sinfo && have munged; then
    echo "SLURM already installed: $(slurmctld -V)"
    exit 0
fi

# Root runs apt-get directly; anyone else needs sudo.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then
        SUDO=(sudo -n)
    else
        echo "install.sh: not root and sudo not found; install slurm-wlm and munge yourself" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# The package postinst scripts try to start services; there is no systemd in
# containers, and start.sh runs the daemons itself, so failures there are fine.
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null

echo "installed: $(slurmctld -V), $(munged -V)"
