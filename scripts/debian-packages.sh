# Sourced by the scripts that install Debian packages: servers the tests run themselves (Redis,
# etcd, Prometheus, containerd), the browser of the web client's test and the tools that build
# the container image (podman, mmdebstrap). The one place that runs apt-get: it says what it
# installs, installs only what is missing, and leaves the machine's own services as they were.

# Run a command as root: directly when root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "debian-packages: not root, and sudo is not installed: run this as root, or install sudo" >&2
        return 1
    fi
}

# The packages among these that dpkg does not list as installed.
#   missing_packages PACKAGE...
missing_packages() {
    local package
    for package in "$@"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" != installed ]; then
            echo "$package"
        fi
    done
}

# Install those of these Debian packages that are missing (without their recommendations), after
# one line on stderr naming them.
#   install_packages PACKAGE...
install_packages() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "debian-packages: apt-get not found: install $* with this system's package manager" >&2
        return 1
    fi
    local missing
    mapfile -t missing < <(missing_packages "$@")
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    echo "installing Debian packages: ${missing[*]} (needs root)" >&2
    as_root true || return 1
    # Another apt may hold the dpkg lock (unattended upgrades, a parallel setup): wait for it
    # rather than failing. The package lists may be missing on a fresh machine: refresh them
    # when the first attempt fails. The environment goes through `env` because sudo drops it.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
    if ! as_root "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2; then
        as_root "${apt[@]}" update >&2
        as_root "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2
    fi
}

# Whether systemd manages this machine's services (not so in most containers).
systemd_running() {
    command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]
}

# Install a Debian package whose system service the tests do not use: they run their own server
# on free ports, with a private configuration, so a packaged one that Debian's postinst starts
# on the default ports only takes memory and ports.
#   install_server_package PACKAGE SERVICE
#
# What is done to the service depends on what the machine had before (under systemd; in a
# container without it, Debian's invoke-rc.d starts no service):
# - a service that was running before is the machine's: left running, and never disabled;
# - a unit that existed before but was not running (another package's, or one the owner stopped)
#   is stopped again if the install started it, and its enablement is left as it was;
# - a unit the install brought is ours entirely: stopped and disabled, so it does not come back
#   at the next boot.
# A policy-rc.d that forbids starting services would avoid the start altogether, but it is
# machine-wide and would also stop a parallel apt run (someone else's) from starting theirs.
install_server_package() {
    local package=$1 service=$2
    if [ -z "$(missing_packages "$package")" ]; then
        return 0
    fi
    if ! systemd_running; then
        install_packages "$package"
        return
    fi
    local unit_before running_before=false
    unit_before="$(systemctl show -p LoadState --value "$service.service" 2>/dev/null || true)"
    if systemctl is-active --quiet "$service.service"; then
        running_before=true
    fi
    install_packages "$package"
    if $running_before; then
        return 0
    fi
    if [ "$unit_before" != loaded ]; then
        if [ "$(systemctl show -p LoadState --value "$service.service" 2>/dev/null)" = loaded ]; then
            echo "debian-packages: stopping and disabling $service, which came with $package" >&2
            as_root systemctl disable --now "$service.service" >&2
        fi
    elif systemctl is-active --quiet "$service.service"; then
        echo "debian-packages: stopping $service, which installing $package started" >&2
        as_root systemctl stop "$service.service" >&2
    fi
}
