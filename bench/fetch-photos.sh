#!/usr/bin/env bash
# Photographs for bench/transcode and bench/render that no test uses: a different
# subset of Debian's plasma-workspace-wallpapers than scripts/fetch-photos.sh takes.
# Usage: bench/fetch-photos.sh [DEST]   (default .cache/bench-photos)
set -euo pipefail
dest=${1:-.cache/bench-photos}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
cd "$work"
if ! apt-get download plasma-workspace-wallpapers >/dev/null 2>&1; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  apt-get download plasma-workspace-wallpapers >/dev/null
fi
dpkg-deb -x plasma-workspace-wallpapers_*.deb x
w=x/usr/share/wallpapers
for name in BytheWater ColdRipple ColorfulCups EveningGlow FallenLeaf Path; do
  cp "$w/$name/contents/images/2560x1600.jpg" "$dest/$(echo "$name" | tr A-Z a-z)-2560x1600.jpg"
done
cp "$w/SafeLanding/contents/images/5120x2880.jpg" "$dest/safelanding-5120x2880.jpg"
cp "$w/SafeLanding/contents/images/1622x2880.jpg" "$dest/safelanding-1622x2880-portrait.jpg"
touch "$dest/.complete"
echo "photos in $dest: $(ls "$dest" | wc -l) files"
