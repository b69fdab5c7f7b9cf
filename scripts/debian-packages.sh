# Sourced by the scripts that install Debian packages: servers the tests run themselves (etcd,
# Prometheus) and the tools that build the container image (podman, mmdebstrap).

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install Debian packages (without their recommendations).
#   install_packages PACKAGE...
install_packages() {
    # Another apt may hold the dpkg lock (unattended upgrades, a parallel setup): wait for it
    # rather than failing. The package lists may be missing on a fresh machine: refresh them
    # when the first attempt fails.
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
    if ! DEBIAN_FRONTEND=noninteractive as_root "${apt[@]}" install --no-install-recommends "$@" >&2; then
        as_root "${apt[@]}" update >&2
        DEBIAN_FRONTEND=noninteractive as_root "${apt[@]}" install --no-install-recommends "$@" >&2
    fi
}

# Install a Debian package, then stop and disable the system service it starts: the tests run
# their own on free ports, so the packaged one on the default ports is only in the way.
#   install_server_package PACKAGE SERVICE
install_server_package() {
    local package=$1 service=$2
    install_packages "$package"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now "$service" >&2 || true
    fi
}
