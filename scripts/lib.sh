# Shared helpers for the scripts: install missing Debian packages idempotently, wait for a URL.

# need_packages PKG...: apt-get install only what is missing (root, or sudo when available).
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

# wait_http URL [SECONDS]: poll until URL answers 200, or fail.
wait_http() {
  local deadline=$(( $(date +%s) + ${2:-30} ))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $1" >&2; return 1; fi
    sleep 0.1
  done
}

# The packages every build needs: cmake (zlib-ng for Pingora), perl (vendored OpenSSL), protoc.
BUILD_PACKAGES=(cmake perl protobuf-compiler pkg-config curl)
