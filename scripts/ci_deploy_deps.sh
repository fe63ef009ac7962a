#!/usr/bin/env bash
# Install the tools that tests/test_deployment.py drives: Ansible with the community.general
# collection (chroot connection), ansible-lint, debootstrap for a Debian bookworm root,
# systemd-analyze for unit checks, and vagrant for `vagrant validate`.
# Run as root on Debian 12. Prints every package it installs; installs nothing already present.
set -euo pipefail

packages=(ansible ansible-lint debootstrap systemd vagrant)

missing=()
for package in "${packages[@]}"; do
    if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        echo "ci_deploy_deps: $package already installed"
    else
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "ci_deploy_deps: nothing to install"
    exit 0
fi

echo "ci_deploy_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for package in "${missing[@]}"; do
    dpkg-query -W -f='ci_deploy_deps: installed ${Package} ${Version}\n' "$package"
done
