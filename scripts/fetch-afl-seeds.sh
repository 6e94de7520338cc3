#!/usr/bin/env bash
# Bad-input seeds: the small image testcases AFL++ ships (Debian's afl++-doc),
# one file per format. tests/faults/test_afl_seeds.py sends them, and mutations
# of them, through a running pipeline.
set -euo pipefail
dest=${1:-.cache/afl-seeds}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
cd "$work"
if ! apt-get download afl++-doc >/dev/null 2>&1; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  apt-get download afl++-doc >/dev/null
fi
dpkg-deb -x afl++-doc_*.deb x
cd - >/dev/null
# Flattened to <format>-<name>, e.g. png-not_kitty_alpha.png.
for path in "$work"/x/usr/share/doc/afl++-doc/afl/testcases/images/*/*; do
  cp "$path" "$dest/$(basename "$(dirname "$path")")-$(basename "$path")"
done
touch "$dest/.complete"
echo "afl seeds in $dest: $(ls "$dest" | wc -l) files"
