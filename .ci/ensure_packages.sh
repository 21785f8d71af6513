# Sourced by the CI scripts: installs what a step needs from Debian's packages when it is
# missing (as root; idempotent, quiet when already there).
#
#   ensure_packages WHAT CHECK PACKAGE...
#
# runs the command CHECK; when it fails, installs the PACKAGEs (a `name:arch` package adds its
# architecture first) and runs CHECK again. Without root, or when the install does not make
# CHECK pass, it stops the script with exit status 3 and a line saying what to install.
ensure_packages() {
  local what=$1 check=$2
  shift 2
  "$check" && return 0
  echo "== installing $what (Debian packages: $*)"
  if [ "$(id -u)" != 0 ]; then
    echo "error: $what: missing, and installing it needs root: run as root, or apt-get install $*" >&2
    exit 3
  fi
  local p
  for p in "$@"; do
    if [[ $p == *:* ]]; then dpkg --add-architecture "${p##*:}"; fi
  done
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  "$check" || { echo "error: $what did not install cleanly" >&2; exit 3; }
}
