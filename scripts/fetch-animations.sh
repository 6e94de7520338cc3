#!/usr/bin/env bash
# Real animated GIF and WebP files for the animation tests, from the test images
# in Pillow's source distribution on PyPI (fetched with pip, never installed).
# Tests also make their own animations from the real photos (tests/support/animations.py).
set -euo pipefail
dest=${1:-.cache/animations}
version=12.1.1
python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] && python=.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
"$python" -m pip download --quiet --no-deps --no-binary :all: "pillow==$version" -d "$work"
files=(chi.gif iss634.gif iss634.webp dispose_bgnd.gif test_extents.gif decompression_bomb_extents.gif)
tar -xzf "$work/pillow-$version.tar.gz" -C "$work" "${files[@]/#/pillow-$version/Tests/images/}"
for f in "${files[@]}"; do cp "$work/pillow-$version/Tests/images/$f" "$dest/$f"; done
touch "$dest/.complete"
echo "animations in $dest: ${#files[@]} files"
