#!/usr/bin/env bash
# HEIC/HEIF test files: real ones from the pillow-heif source distribution on PyPI
# (its tests/images: iPhone grid photos with depth maps and irot, Nokia's
# conformance samples with a burst and an alpha overlay, 10/12-bit and alpha
# files, corrupt and truncated ones), plus HEICs encoded here with heif-enc (x265,
# Debian's libheif-examples) from the real photographs of scripts/fetch-photos.sh.
# Nothing is committed: pillow-heif is BSD-3-Clause, the Nokia samples are
# © Nokia (their COPYRIGHT.txt is copied beside them), so they stay in the cache.
#   usage: scripts/fetch-heif-samples.sh DEST PHOTOS PIP
set -euo pipefail
dest=${1:-.cache/heif-samples}
photos=${2:-.cache/photos}
pip=${3:-.venv/bin/pip}
python=$(dirname "$pip")/python
version=1.9.0
# Debian 12's libheif has x265 built in; from Debian 13 on it is a plugin package.
if ! heif-enc --list-encoders 2>/dev/null | grep -q x265; then
  "$(dirname "$0")/apt-install.sh" libheif-plugin-x265
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
"$pip" download -q --no-binary :all: --no-deps -d "$work" "pillow-heif==$version"
tar -xzf "$work/pillow_heif-$version.tar.gz" -C "$work"
images="$work/pillow_heif-$version/tests/images"
for f in heif_other/pug.heic heif_other/arrow.heic heif_special/guitar_cw90.hif \
  heif_other/nokia/alpha.heic heif_other/nokia/bird_burst.heic heif_other/nokia/COPYRIGHT.txt \
  heif_special/aux_YCbCr.heic heif_special/200MP.heic heif_special/unsupported_depth_image.heic \
  heif/RGB_8__29x100.heif heif/RGB_10__29x100.heif heif/RGBA_10__128x128.heif \
  heif/RGBA_8__128x128.heif heif/L_12__29x100.heif heif/LA_8__29x100.heif \
  heif_corrupted/corrupted.heic heif_truncated/truncated.heic; do
  cp "$images/$f" "$dest/$(basename "$f")"
done
cp "$work/pillow_heif-$version/LICENSE.txt" "$dest/LICENSE-pillow-heif.txt"

# From the real photographs: an iPhone-style Display P3 HEIC (8-bit 4:2:0 with a P3
# ICC profile), one with a transparent outside, and a 10-bit one. libvips makes the PNG inputs.
"$python" - "$photos" "$work" <<'PY'
import sys
import pyvips
photos, work = sys.argv[1:]
flow = pyvips.Image.new_from_file(f"{photos}/flow-dark-720x1440-portrait.jpg")
flow.icc_transform("p3", embedded=True).pngsave(f"{work}/p3.png")
kay = pyvips.Image.thumbnail(f"{photos}/kay-dark-1080x1920-alpha.png", 540, height=960)
xy = pyvips.Image.xyz(kay.width, kay.height)  # a truly transparent outside: a disc
inside = ((xy[0] - 270) ** 2 + (xy[1] - 480) ** 2) ** 0.5 < 260
kay.extract_band(0, n=3).bandjoin(inside.ifthenelse(255, 0).cast("uchar")).pngsave(
    f"{work}/alpha.png"
)
autumn = pyvips.Image.thumbnail(f"{photos}/autumn-2560x1600.jpg", 1280)
(autumn.cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16").pngsave(
    f"{work}/deep.png", bitdepth=16
)
PY
heif-enc -q 80 -o "$dest/photo-p3-720x1440.heic" "$work/p3.png" >/dev/null
heif-enc -q 80 -o "$dest/photo-alpha-540x960.heic" "$work/alpha.png" >/dev/null
heif-enc -q 80 -b 10 -o "$dest/photo-10bit-1280x800.heic" "$work/deep.png" >/dev/null
touch "$dest/.complete"
echo "HEIF samples in $dest: $(ls "$dest" | wc -l) files"
