#!/usr/bin/env bash
# Real photographs for end-to-end tests and benchmarks, from Debian's KDE wallpapers.
# Unit tests make their own small images; these are the large, real ones.
set -euo pipefail
dest=${1:-.cache/photos}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
cd "$work"
if ! apt-get download plasma-workspace-wallpapers >/dev/null 2>&1; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  apt-get download plasma-workspace-wallpapers >/dev/null
fi
dpkg-deb -x plasma-workspace-wallpapers_*.deb x
w=x/usr/share/wallpapers
cd - >/dev/null
cp "$work/$w/Flow/contents/images/5120x2880.jpg"            "$dest/flow-5120x2880.jpg"
cp "$work/$w/Flow/contents/images_dark/720x1440.jpg"        "$dest/flow-dark-720x1440-portrait.jpg"
cp "$work/$w/Autumn/contents/images/2560x1600.jpg"          "$dest/autumn-2560x1600.jpg"
cp "$work/$w/PastelHills/contents/images/2560x1440.jpg"     "$dest/pastelhills-3200x2000.jpg"
cp "$work/$w/Kay/contents/images_dark/1080x1920.png"        "$dest/kay-dark-1080x1920-alpha.png"
touch "$dest/.complete"
echo "photos in $dest: $(ls "$dest" | wc -l) files"
