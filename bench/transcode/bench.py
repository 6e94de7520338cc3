"""bench/transcode: Pinhole's ladder against decode-once peers, in one run.

Run from the repository root (sharp needs ``npm ci`` in bench/transcode first; the
photos come from ``bench/fetch-photos.sh``):

    .venv/bin/python bench/transcode/bench.py [PHOTO_DIR] [--rounds 3] [--extras]

PHOTO_DIR defaults to .cache/bench-photos (photographs no test uses) and falls back
to .cache/photos; every JPEG in it is used. Every contender runs in its own process
and reports its own peak RSS (``VmHWM``), so memory is that contender's alone. Each
renders the same ladder of the same photographs with the same encoder settings. The
contenders take turns, round by round, and each row is the median round. The last
round's outputs are scored with SSIM against one reference for everyone: pyvips'
Lanczos resize (``thumbnail_image``) of the full, upright, sRGB decode. Timings are
wall clock on whatever else the machine is doing: the caption printed with the
tables gives the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import pyvips  # noqa: E402

from pinhole.app.malloc import limit_malloc_arenas  # noqa: E402
from pinhole.app.vips import configure_vips  # noqa: E402
from pinhole.domain.job import SourceInfo  # noqa: E402
from pinhole.domain.ladder import PRESETS, Format  # noqa: E402
from pinhole.settings import Limits, Transcode  # noqa: E402
from transcoder.quality import ssim  # noqa: E402

HERE = Path(__file__).resolve().parent
PHOTOS = ROOT / ".cache" / "photos"
BENCH_PHOTOS = ROOT / ".cache" / "bench-photos"
CORES = os.cpu_count() or 1
DEFAULTS = Transcode()
QUALITY = {
    "jpeg": DEFAULTS.jpeg_quality,
    "webp": DEFAULTS.webp_quality,
    "avif": DEFAULTS.avif_quality,
}
PROGRESSIVE_FROM = 474  # JPEG progressive from this width (as Pinhole's engines)
LARGE_FROM = 1200  # WebP's large-effort from this width (settings.webp_large_effort)
_NO_LIMIT = 10_000_000


def srgb_upright(image: pyvips.Image) -> pyvips.Image:
    """Upright, 8-bit sRGB: embedded ICC profiles converted, as Pinhole and sharp do."""
    image = image.autorot()
    if image.get_typeof("icc-profile-data") != 0:
        image = image.icc_transform("srgb", embedded=True, intent="perceptual")
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    if image.hasalpha():
        image = image.flatten(background=255)
    return image.cast("uchar")


# ---------------------------------------------------------------- child side


def _settings(config: dict[str, Any]) -> Transcode:
    formats = set(config["formats"])
    lazy = [f"{p.name}.{f.value}" for p in PRESETS for f in Format if f.value not in formats]
    return Transcode(
        lazy_variants=lazy,
        avif_effort=config["avif_effort"],
        webp_effort=config["webp_effort"],
        webp_large_effort=config["webp_large_effort"],
        render_threads=config["render_threads"],
    )


def _engine_runner(config: dict[str, Any], kind: str) -> Any:
    settings = _settings(config)
    # As runtime.build_transcoder does (an explicit VIPS_CONCURRENCY wins, for the sweep).
    configure_vips(int(os.environ.get("VIPS_CONCURRENCY", settings.vips_threads_per_op)))
    limits = Limits(max_pixels=100_000_000)
    if kind == "pillow":
        from transcoder.pillow_engine import PillowEngine

        engine: Any = PillowEngine(settings, limits)
    else:
        from transcoder.vips_engine import VipsEngine

        engine = VipsEngine(settings, limits)

    def render(data: bytes) -> list[tuple[str, str, int, int, bytes]]:
        header = pyvips.Image.new_from_buffer(data, "")
        loader = str(header.get("vips-loader"))
        pages = int(header.get("n-pages")) if header.get_typeof("n-pages") else 1
        fmt = next((f for f in ("gif", "webp", "heif") if loader.startswith(f)), "jpeg")
        header = header.autorot()
        source = SourceInfo(
            format=fmt,
            width=header.width,
            height=header.height,
            bytes=len(data),
            has_alpha=False,
            frames=pages if fmt in ("gif", "webp") else 1,
        )
        rendering = engine.render_ladder(data, source)
        return [(v.preset.name, v.fmt.value, v.width, v.height, v.body) for v in rendering.variants]

    return render


def _vips_save_options(config: dict[str, Any], fmt: str, width: int) -> tuple[str, dict[str, Any]]:
    """The encoder settings every libvips contender uses (Pinhole's defaults)."""
    q = config["quality"]
    if fmt == "jpeg":
        return ".jpg", {
            "Q": q["jpeg"],
            "optimize_coding": True,
            "interlace": width >= PROGRESSIVE_FROM,
            "keep": "none",
        }
    if fmt == "webp":
        large = width >= LARGE_FROM
        effort = config["webp_large_effort"] if large else config["webp_effort"]
        return ".webp", {"Q": q["webp"], "effort": effort, "keep": "none"}
    return ".avif", {"Q": q["avif"], "effort": config["avif_effort"], "keep": "none"}


def _pyvips_once_runner(config: dict[str, Any]) -> Any:
    """pyvips used the efficient way: decode once (upright, sRGB, in memory), then
    resize every preset from that image and encode each output from it. With
    ``threads`` > 1 the encodes go to a thread pool (pyvips releases the GIL)."""
    threads = config.get("threads", 1)
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None

    def render(data: bytes) -> list[tuple[str, str, int, int, bytes]]:
        base = srgb_upright(pyvips.Image.new_from_buffer(data, "", fail_on="error"))
        base = base.copy_memory()
        jobs = []
        for preset in config["presets"]:
            width = preset["width"]
            image = (
                base
                if width is None or width >= base.width
                else base.thumbnail_image(width, height=_NO_LIMIT, size="down")
            )
            jobs += [(preset["name"], fmt, image) for fmt in config["formats"]]

        def encode(job: tuple[str, str, pyvips.Image]) -> tuple[str, str, int, int, bytes]:
            name, fmt, image = job
            suffix, options = _vips_save_options(config, fmt, image.width)
            return name, fmt, image.width, image.height, image.write_to_buffer(suffix, **options)

        return list(pool.map(encode, jobs)) if pool else [encode(j) for j in jobs]

    return render


def _pillow_once_runner(config: dict[str, Any]) -> Any:
    """Pillow-SIMD used the efficient way: open once, ``draft`` (JPEG DCT scaling) to
    the largest output when every output is smaller than the source, decode once,
    EXIF-transpose, resize every preset from it (LANCZOS, ``reducing_gap=2`` as
    ``Image.thumbnail`` does) and encode on a pool of ``threads`` (Pillow releases the
    GIL in resize and encode). No ICC conversion: this build has no LittleCMS."""
    import io

    from PIL import Image, ImageOps

    threads = config.get("threads", 1)
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    q = config["quality"]

    def render(data: bytes) -> list[tuple[str, str, int, int, bytes]]:
        opened = Image.open(io.BytesIO(data))
        widths = [p["width"] for p in config["presets"]]
        upright_w, upright_h = opened.size
        if (opened.getexif().get(0x0112) or 1) >= 5:
            upright_w, upright_h = upright_h, upright_w
        if None not in widths and max(widths) < upright_w:
            largest = max(widths)
            box = (largest, round(upright_h * largest / upright_w))
            if upright_w != opened.size[0]:
                box = (box[1], box[0])
            opened.draft("RGB", box)
        opened.load()
        base = ImageOps.exif_transpose(opened) or opened
        if base.mode != "RGB":
            base = base.convert("RGB")
        jobs = []
        for preset in config["presets"]:
            width = preset["width"]
            image = base
            if width is not None and width < base.width:
                height = max(1, round(base.height * width / base.width))
                image = base.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
            jobs += [(preset["name"], fmt, image) for fmt in config["formats"]]

        def encode(job: tuple[str, str, Any]) -> tuple[str, str, int, int, bytes]:
            name, fmt, image = job
            buffer = io.BytesIO()
            if fmt == "jpeg":
                options = {
                    "quality": q["jpeg"],
                    "optimize": True,
                    "progressive": image.width >= PROGRESSIVE_FROM,
                }
            else:
                large = image.width >= LARGE_FROM
                method = config["webp_large_effort"] if large else config["webp_effort"]
                options = {"quality": q["webp"], "method": method}
            image.save(buffer, format=fmt.upper(), **options)
            return name, fmt, image.width, image.height, buffer.getvalue()

        return list(pool.map(encode, jobs)) if pool else [encode(j) for j in jobs]

    return render


def _pyvips_animated_runner(config: dict[str, Any]) -> Any:
    """pyvips the way libvips' docs do animations: ``thumbnail_buffer(n=-1)`` per
    preset (it resizes frame by frame and keeps ``page-height``), every frame to
    memory, then animated WebP and GIF from it, the encodes on ``threads``."""
    threads = config.get("threads", 1)
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None

    def render(data: bytes) -> list[tuple[str, str, int, int, bytes]]:
        header = pyvips.Image.new_from_buffer(data, "", fail_on="error")
        rolls = []
        for preset in config["presets"]:
            width = min(preset["width"] or header.width, header.width)
            roll = pyvips.Image.thumbnail_buffer(
                data, width, height=_NO_LIMIT, size="down", option_string="n=-1"
            ).copy_memory()
            rolls += [(preset["name"], fmt, roll) for fmt in config["formats"]]

        def encode(job: tuple[str, str, pyvips.Image]) -> tuple[str, str, int, int, bytes]:
            name, fmt, roll = job
            if fmt == "gif":
                body = roll.write_to_buffer(".gif", effort=config["gif_effort"], keep="none")
            else:
                suffix, options = _vips_save_options(config, fmt, roll.width)
                body = roll.write_to_buffer(suffix, **options)
            return name, fmt, roll.width, int(roll.get("page-height")), body

        return list(pool.map(encode, rolls)) if pool else [encode(j) for j in rolls]

    return render


def _pillow_animated_runner(config: dict[str, Any]) -> Any:
    """Pillow-SIMD: every frame decoded once (RGBA), resized per preset (LANCZOS),
    saved with ``save_all`` as animated WebP and GIF with the source's durations
    and loop, the encodes on ``threads``."""
    import io

    from PIL import Image, ImageSequence

    threads = config.get("threads", 1)
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    q = config["quality"]

    def render(data: bytes) -> list[tuple[str, str, int, int, bytes]]:
        opened = Image.open(io.BytesIO(data))
        frames, durations = [], []
        for frame in ImageSequence.Iterator(opened):
            frames.append(frame.convert("RGBA"))
            durations.append(frame.info.get("duration", 100))
        loop = opened.info.get("loop", 0)
        width0, height0 = frames[0].size
        jobs = []
        for preset in config["presets"]:
            width = min(preset["width"] or width0, width0)
            size = (width, max(1, round(height0 * width / width0)))
            sized = (
                frames
                if width == width0
                else [f.resize(size, Image.Resampling.LANCZOS) for f in frames]
            )
            jobs += [(preset["name"], fmt, sized) for fmt in config["formats"]]

        def encode(job: tuple[str, str, list[Any]]) -> tuple[str, str, int, int, bytes]:
            name, fmt, sized = job
            buffer = io.BytesIO()
            options: dict[str, Any] = {"save_all": True, "append_images": sized[1:]}
            options.update(duration=durations, loop=loop)
            if fmt == "webp":
                large = sized[0].width >= LARGE_FROM
                method = config["webp_large_effort"] if large else config["webp_effort"]
                options.update(quality=q["webp"], method=method)
            sized[0].save(buffer, format=fmt.upper(), **options)
            return name, fmt, sized[0].width, sized[0].height, buffer.getvalue()

        return list(pool.map(encode, jobs)) if pool else [encode(j) for j in jobs]

    return render


def child(name: str, config: dict[str, Any]) -> None:
    if name.startswith("pinhole-"):
        limit_malloc_arenas()  # as the `pinhole` command does at start
    configure_vips()
    if name == "pyvips-once":
        render = _pyvips_once_runner(config)
    elif name == "pillow-once":
        if config.get("heif_opener"):
            import pi_heif

            pi_heif.register_heif_opener()
        render = _pillow_once_runner(config)
    elif name == "pyvips-animated":
        render = _pyvips_animated_runner(config)
    elif name == "pillow-animated":
        render = _pillow_animated_runner(config)
    else:
        render = _engine_runner(config, "pillow" if name.startswith("pinhole-pillow") else "vips")
    inputs = [Path(p).read_bytes() for p in config["photos"]]
    jobs = config.get("jobs", 1)
    pool = ThreadPoolExecutor(max_workers=jobs)
    bytes_by_format: dict[str, int] = defaultdict(int)
    pixels = 0
    try:
        render(inputs[0])  # warm-up: lazy imports, libvips' first-use setup, page cache
        started = time.perf_counter()
        results = list(pool.map(render, inputs)) if jobs > 1 else [render(d) for d in inputs]
        seconds = time.perf_counter() - started
    except Exception as exc:  # a peer that cannot do it: the tables say so, with why
        # The cause is libvips' last line but the loader's closing "load error".
        lines = [line.strip() for line in str(exc).strip().splitlines()]
        causes = [line for line in lines if line and not line.endswith("load error")]
        last = causes[-1] if causes else (lines[-1] if lines else "")
        print(json.dumps({"error": f"{type(exc).__name__}: {last[:160]}"}))
        return
    for index, outputs in enumerate(results):
        for preset, fmt, width, height, body in outputs:
            pixels += width * height
            bytes_by_format[fmt] += len(body)
            if config.get("outdir"):
                folder = Path(config["outdir"]) / str(index)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{preset}.{fmt}").write_bytes(body)
    print(
        json.dumps(
            {
                "photos": len(inputs),
                "seconds": seconds,
                "megapixels": pixels / 1e6,
                "bytes": bytes_by_format,
                "peak_rss_mb": _vm_hwm_mb(),
            }
        )
    )


def _vm_hwm_mb() -> float:
    """This process's peak RSS. (``ru_maxrss`` would not do: Linux carries the
    parent's high-water mark across fork and exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --------------------------------------------------------------- parent side


def run(name: str, config: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    if name.startswith("sharp"):
        command = ["node", str(HERE / "sharp_ladder.mjs"), json.dumps(config)]
    else:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            name,
            json.dumps(config),
        ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=ROOT
    )
    output, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed with {proc.returncode}")
    result: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    if "error" in result and not config.get("may_fail"):
        raise RuntimeError(f"{name} failed: {result['error']}")
    return result


_references: dict[tuple[str, int], pyvips.Image] = {}


def _reference(photo: str, width: int) -> pyvips.Image:
    key = (photo, width)
    if key not in _references:
        original = srgb_upright(pyvips.Image.new_from_file(photo)).copy_memory()
        if width < original.width:
            original = original.thumbnail_image(width, height=_NO_LIMIT, size="down")
        _references[key] = original.copy_memory()
    return _references[key]


def scores(outdir: Path, photos: list[str]) -> dict[str, float]:
    """Mean SSIM per format over every output of the last round."""
    by_format: dict[str, list[float]] = defaultdict(list)
    for index, photo in enumerate(photos):
        for path in sorted((outdir / str(index)).iterdir()):
            image = pyvips.Image.new_from_file(str(path))
            reference = _reference(photo, image.width)
            if (reference.width, reference.height) != (image.width, image.height):
                reference = reference.thumbnail_image(
                    image.width, height=image.height, size="force"
                )
            by_format[path.suffix[1:]].append(ssim(image, reference))
    return {fmt: sum(v) / len(v) for fmt, v in by_format.items()}


def _base_config(photos: list[str], formats: list[str]) -> dict[str, Any]:
    return {
        "photos": photos,
        "formats": formats,
        "presets": [{"name": p.name, "width": p.width} for p in PRESETS],
        "quality": QUALITY,
        "avif_effort": DEFAULTS.avif_effort,
        "webp_effort": DEFAULTS.webp_effort,
        "webp_large_effort": DEFAULTS.webp_large_effort,
        "render_threads": DEFAULTS.render_threads,
        "gif_effort": DEFAULTS.gif_effort,
        "cores": CORES,
    }


HEADER = (
    "| contender | photos/s | rounds (photos/s) | vs best peer | output MP/s | peak RSS MB "
    "| total KiB per format | mean SSIM per format |\n"
    "|---|---:|---|---:|---:|---:|---|---|"
)


def _sharp_version() -> str:
    try:
        package = HERE / "node_modules" / "sharp" / "package.json"
        return str(json.loads(package.read_text())["version"])
    except OSError:
        return "?"


def contenders() -> list[tuple[str, str, dict[str, Any], bool]]:
    """label, runner, config overrides, is a peer"""
    sharp = f"sharp {_sharp_version()}"
    return [
        ("Pinhole vips engine (1 job)", "pinhole-vips", {}, False),
        (
            "Pinhole vips engine (2 jobs in flight, the worker's default)",
            "pinhole-vips",
            {"jobs": 2},
            False,
        ),
        ("Pinhole Pillow-SIMD engine (1 job)", "pinhole-pillow", {}, False),
        ("pyvips, decode once, encodes in turn", "pyvips-once", {"threads": 1}, True),
        (
            f"pyvips, decode once, encodes on {CORES} threads",
            "pyvips-once",
            {"threads": CORES},
            True,
        ),
        (
            f"Pillow-SIMD, decode once (draft), encodes on {CORES} threads",
            "pillow-once",
            {"threads": CORES},
            True,
        ),
        (
            f"{sharp}, one sharp(buf), .clone() per output, concurrency {CORES}",
            "sharp-clone",
            {"mode": "clone"},
            True,
        ),
        (f"{sharp}, decode to raw once, concurrency {CORES}", "sharp-raw", {"mode": "raw"}, True),
    ]


def ladder_table(photos: list[str], formats: list[str], rounds: int) -> None:
    title = " + ".join(f.upper() if f != "jpeg" else "JPEG" for f in formats)
    print(f"\n### Ladder {title}: {len(photos)} photos, {rounds} rounds, median round\n")
    entries = [c for c in contenders() if "avif" not in formats or c[1] != "pillow-once"]
    runs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    ssims: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            # Alternate the order so that no contender always runs first or last.
            order = list(range(len(entries)))
            if round_ % 2:
                order.reverse()
            for index in order:
                _, runner, overrides, _ = entries[index]
                config = {**_base_config(photos, formats), **overrides}
                if round_ == rounds - 1:
                    config["outdir"] = str(Path(tmp) / str(index))
                runs[index].append(run(runner, config))
        for index in range(len(entries)):
            ssims[index] = scores(Path(tmp) / str(index), photos)
    rate = {i: statistics.median(r["photos"] / r["seconds"] for r in runs[i]) for i in runs}
    best_peer = max(rate[i] for i, e in enumerate(entries) if e[3])
    print(HEADER)
    for index, (label, _, _, peer) in enumerate(entries):
        result = runs[index][-1]
        per_round = ", ".join(f"{r['photos'] / r['seconds']:.2f}" for r in runs[index])
        mp_s = statistics.median(r["megapixels"] / r["seconds"] for r in runs[index])
        rss = max(r["peak_rss_mb"] for r in runs[index])
        sizes = " ".join(f"{f}:{b / 1024:,.0f}" for f, b in sorted(result["bytes"].items()))
        score = " ".join(f"{f}:{v:.4f}" for f, v in sorted(ssims[index].items()))
        name = label if peer or rate[index] < best_peer else f"**{label}**"
        print(
            f"| {name} | {rate[index]:.2f} | {per_round} | {rate[index] / best_peer:.2f}x "
            f"| {mp_s:.1f} | {rss:.0f} | {sizes} | {score} |"
        )
    if "avif" in formats:
        print("\n(Pillow-SIMD has no AVIF encoder in this build, so it sits this table out.)")


HEIC_FILES = ("pug.heic", "arrow.heic")  # iPhone photos, 12 MP, HEVC grid (tiled) images
HEIF_SAMPLES = ROOT / ".cache" / "heif-samples"
ANIMATIONS = ROOT / ".cache" / "animations"
ANIMATED_GIFS = ("iss634.gif", "chi.gif")  # real GIFs from Pillow's sdist test images


def _frames(path: Path) -> int:
    header = pyvips.Image.new_from_file(str(path))
    return int(header.get("n-pages")) if header.get_typeof("n-pages") else 1


def _format_row(label: str, result: dict[str, Any], outdir: Path | None, note: str) -> str:
    """One row of the HEIC and animated tables; a contender that cannot says so."""
    if "error" in result:
        return f"| {label} | cannot: `{result['error']}` | — | — | — | {note} |"
    per_image = result["seconds"] / result["photos"]
    sizes = " ".join(f"{f}:{b / 1024:,.0f}" for f, b in sorted(result["bytes"].items()))
    frames = "—"
    if outdir is not None:
        by_format: dict[str, set[int]] = defaultdict(set)
        for path in sorted(outdir.rglob("*.*")):
            by_format[path.suffix[1:]].add(_frames(path))
        frames = " ".join(
            f"{f}:{'/'.join(str(n) for n in sorted(counts))}"
            for f, counts in sorted(by_format.items())
        )
    return (
        f"| {label} | {per_image:.2f} | {result['peak_rss_mb']:.0f} | {sizes} | {frames} | {note} |"
    )


EXTRA_HEADER = (
    "| contender | s per image | peak RSS MB | total KiB per format | frames per output "
    "(per format) | note |\n|---|---:|---:|---|---|---|"
)


def heic_table(rounds: int) -> None:
    """iPhone HEICs (HEVC), decode + full ladder: who can decode them at all."""
    photos = [str(HEIF_SAMPLES / name) for name in HEIC_FILES if (HEIF_SAMPLES / name).exists()]
    if not photos:
        print("\n(no HEIC samples: scripts/fetch-heif-samples.sh fetches them)")
        return
    sizes = ", ".join(
        f"{Path(p).name} {pyvips.Image.new_from_file(p).width}x"
        f"{pyvips.Image.new_from_file(p).height}"
        for p in photos
    )
    print(f"\n### HEIC (iPhone, HEVC grid images: {sizes}), decode + full ladder\n")
    print(EXTRA_HEADER)
    full = ["avif", "webp", "jpeg"]
    sharp = f"sharp {_sharp_version()}"
    entries: list[tuple[str, str, dict[str, Any], str]] = [
        ("Pinhole vips engine (1 job)", "pinhole-vips", {}, "HEVC through pi-heif"),
        (
            "Pinhole vips engine (1 job), WebP + JPEG only",
            "pinhole-vips",
            {"formats": ["webp", "jpeg"]},
            "like for like with the Pillow-SIMD row",
        ),
        (
            f"pyvips, decode once, encodes on {CORES} threads",
            "pyvips-once",
            {"threads": CORES},
            "pyvips-binary's libvips, without Pinhole's pi-heif path",
        ),
        (
            f"Pillow-SIMD + pi-heif opener, decode once, encodes on {CORES} threads",
            "pillow-once",
            {"threads": CORES, "heif_opener": True, "formats": ["webp", "jpeg"]},
            "no AVIF encoder in this build: WebP + JPEG only; no ICC conversion",
        ),
        (
            f"{sharp}, one sharp(buf), .clone() per output, concurrency {CORES}",
            "sharp-clone",
            {"mode": "clone"},
            "sharp's prebuilt libvips",
        ),
        (
            f"{sharp}, decode to raw once, concurrency {CORES}",
            "sharp-raw",
            {"mode": "raw"},
            "sharp's prebuilt libvips",
        ),
    ]
    for label, runner, overrides, note in entries:
        config = {**_base_config(photos * rounds, full), "may_fail": True, **overrides}
        print(_format_row(label, run(runner, config), None, note))


def _panning_gif(folder: Path, tmp: Path) -> Path | None:
    """A 960x540, 48-frame GIF panning across a real photo (as tests/support/animations.py)."""
    photos = sorted(folder.glob("*.jpg"))
    if not photos:
        return None
    width, height, frames = 960, 540, 48
    source = pyvips.Image.thumbnail(str(photos[0]), width * 2, height=height * 2, crop="centre")
    source = srgb_upright(source)
    step_x = (source.width - width) / (frames - 1)
    step_y = (source.height - height) / (frames - 1)
    pages = [
        source.crop(round(step_x * i), round(step_y * i), width, height) for i in range(frames)
    ]
    roll = pyvips.Image.arrayjoin(pages, across=1).copy()
    roll.set_type(pyvips.GValue.gint_type, "page-height", height)
    roll.set_type(pyvips.GValue.array_int_type, "delay", [40] * frames)
    roll.set_type(pyvips.GValue.gint_type, "loop", 0)
    path = tmp / f"panning-{photos[0].stem}-{width}x{height}x{frames}.gif"
    roll.write_to_file(str(path), effort=1)
    return path


def animated_table(folder: Path, rounds: int) -> None:
    """Real animated GIFs through the ladder, animated WebP + GIF out, against peers."""
    with tempfile.TemporaryDirectory() as tmp:
        gifs = [ANIMATIONS / name for name in ANIMATED_GIFS if (ANIMATIONS / name).exists()]
        made = _panning_gif(folder, Path(tmp))
        inputs = [str(p) for p in gifs + ([made] if made else [])]
        if not inputs:
            print("\n(no GIFs: scripts/fetch-animations.sh fetches them)")
            return
        described = []
        for p in inputs:
            header = pyvips.Image.new_from_file(p)
            described.append(f"{Path(p).name} {header.width}x{header.height}x{_frames(Path(p))}")
        print(f"\n### Animated GIF ({', '.join(described)}), ladder of animated WebP + GIF\n")
        print(EXTRA_HEADER)
        sharp = f"sharp {_sharp_version()}"
        entries: list[tuple[str, str, dict[str, Any], str]] = [
            ("Pinhole vips engine (1 job)", "pinhole-vips", {}, "transcoder/animation.py"),
            (
                f"pyvips, thumbnail_buffer(n=-1) per preset, encodes on {CORES} threads",
                "pyvips-animated",
                {"threads": CORES},
                "",
            ),
            (
                f"Pillow-SIMD, frames decoded once, save_all, encodes on {CORES} threads",
                "pillow-animated",
                {"threads": CORES},
                "",
            ),
            (
                f"{sharp}, sharp(buf, {{animated: true}}), .clone() per output, "
                f"concurrency {CORES}",
                "sharp-animated",
                {"mode": "animated"},
                "",
            ),
        ]
        for index, (label, runner, overrides, note) in enumerate(entries):
            outdir = Path(tmp) / f"out-{index}"
            config = {
                **_base_config(inputs * rounds, ["webp", "gif"]),
                "may_fail": True,
                "outdir": str(outdir),
                **overrides,
            }
            print(_format_row(label, run(runner, config), outdir, note))


def concurrency_table(photos: list[str], formats: list[str]) -> None:
    print("\n### VIPS threads per operation x encode threads (Pinhole vips engine, 1 job)\n")
    print("| VIPS_CONCURRENCY | render_threads | photos/s | peak RSS MB |\n|---:|---:|---:|---:|")
    for vips_threads in (1, 2):
        for render_threads in (2, 3, 4):
            config = {**_base_config(photos, formats), "render_threads": render_threads}
            r = run("pinhole-vips", config, {"VIPS_CONCURRENCY": str(vips_threads)})
            print(
                f"| {vips_threads} | {render_threads} | {r['photos'] / r['seconds']:.2f} "
                f"| {r['peak_rss_mb']:.0f} |"
            )


def arena_table(photos: list[str]) -> None:
    """Peak RSS of the vips engine, full ladder, 3 photos in flight, by malloc arena limit."""
    print("\n### malloc arenas (Pinhole vips engine, full ladder, 3 jobs in flight, 4 rounds)\n")
    print("| arenas | photos/s | peak RSS MB |\n|---|---:|---:|")
    limits = {"glibc default (MALLOC_ARENA_MAX=0)": {"MALLOC_ARENA_MAX": "0"}, "2 (Pinhole)": {}}
    for label, env in limits.items():
        config = {**_base_config(photos * 4, ["avif", "webp", "jpeg"]), "jobs": 3}
        r = run("pinhole-vips", config, env)
        print(f"| {label} | {r['photos'] / r['seconds']:.2f} | {r['peak_rss_mb']:.0f} |")


def large_table(photo: Path) -> None:
    """One 60 MP JPEG (a real photo upscaled), JPEG + WebP, every contender."""
    source = pyvips.Image.new_from_file(str(photo))
    big = source.resize(9800 / source.width)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upscaled-60mp.jpg"
        big.write_to_file(str(path), Q=90)
        print(f"\n### One {big.width}x{big.height} JPEG ({big.width * big.height / 1e6:.0f} MP)\n")
        print("| contender | s per photo | peak RSS MB | total KiB per format |")
        print("|---|---:|---:|---|")
        for label, runner, overrides, _ in contenders():
            if overrides.get("jobs", 1) > 1:
                continue
            r = run(runner, {**_base_config([str(path)], ["webp", "jpeg"]), **overrides})
            sizes = " ".join(f"{f}:{b / 1024:,.0f}" for f, b in sorted(r["bytes"].items()))
            print(f"| {label} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {sizes} |")


def quality_sweep(photos: list[str]) -> None:
    """Bytes and SSIM per quality setting, on the 1200x and 736x presets."""
    configure_vips()
    print("\n### Quality sweep (vips encoders; 1200x and 736x of each photo; mean)\n")
    print("| format | quality | KiB per image | SSIM |\n|---|---:|---:|---:|")
    sweeps = {
        "jpeg": (70, 75, 80, 85, 90),
        "webp": (70, 75, 78, 82, 88),
        "avif": (40, 46, 52, 58, 64),
    }
    images = []
    for photo in photos:
        for width in (1200, 736):
            images.append(_reference(photo, width))
    for fmt, qualities in sweeps.items():
        for q in qualities:
            total, score = 0, 0.0
            for image in images:
                options: dict[str, Any] = {"Q": q, "keep": "none"}
                if fmt == "jpeg":
                    options.update(optimize_coding=True, interlace=True)
                if fmt == "avif":
                    options["effort"] = DEFAULTS.avif_effort
                if fmt == "webp":
                    options["effort"] = DEFAULTS.webp_effort
                body = image.write_to_buffer(f".{'jpg' if fmt == 'jpeg' else fmt}", **options)
                total += len(body)
                score += ssim(pyvips.Image.new_from_buffer(body, ""), image)
            chosen = " (default)" if q == QUALITY[fmt] else ""
            print(
                f"| {fmt} | {q}{chosen} | {total / len(images) / 1024:,.1f} | "
                f"{score / len(images):.4f} |"
            )


def avif_effort_sweep(photo: str) -> None:
    """AVIF cost per preset and effort, one encode thread (VIPS_CONCURRENCY=1)."""
    print(f"\n### AVIF effort on {Path(photo).name} (seconds per encode, one core)\n")
    script = (
        "import json,sys,time,pyvips\n"
        "from transcoder.quality import ssim\n"
        "src=pyvips.Image.new_from_file(sys.argv[1]).autorot().copy_memory()\n"
        "out={}\n"
        "for effort in (0,1,2,3):\n"
        "  for w in (236,474,736,1200,None):\n"
        "    im=src if w is None else src.thumbnail_image(w,height=10**7).copy_memory()\n"
        "    t=time.perf_counter()\n"
        f"    b=im.write_to_buffer('.avif',Q={QUALITY['avif']},effort=effort,keep='none')\n"
        "    dt=time.perf_counter()-t\n"
        "    s=ssim(pyvips.Image.new_from_buffer(b,''),im)\n"
        "    out[f'{effort}:{w or \"originals\"}']=[dt,len(b),s]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "VIPS_CONCURRENCY": "1", "PYTHONPATH": str(ROOT)}
    data = json.loads(
        subprocess.run(
            [sys.executable, "-c", script, photo], env=env, capture_output=True, check=True
        ).stdout
    )
    names = ["236", "474", "736", "1200", "originals"]
    print("| effort | " + " | ".join(f"{n} s / KiB / SSIM" for n in names) + " |")
    print("|---:|" + "---|" * len(names))
    for effort in (0, 1, 2, 3):
        cells = []
        for n in names:
            dt, size, s = data[f"{effort}:{n}"]
            cells.append(f"{dt:.3f} / {size / 1024:.0f} / {s:.4f}")
        print(f"| {effort} | " + " | ".join(cells) + " |")


def one_core_ladder(photo: str) -> None:
    config = {**_base_config([photo] * 3, ["avif", "webp", "jpeg"]), "render_threads": 1}
    r = run("pinhole-vips", config, {"VIPS_CONCURRENCY": "1"})
    print(
        f"\nFull ladder (15 variants incl. AVIF) of {Path(photo).name} on one core: "
        f"{r['seconds'] / r['photos']:.2f} s per photo"
    )


def photo_folder(given: str | None) -> Path:
    if given:
        return Path(given)
    return BENCH_PHOTOS if (BENCH_PHOTOS / ".complete").exists() else PHOTOS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("photos", nargs="?", help="folder of JPEGs (default .cache/bench-photos)")
    parser.add_argument("--child", nargs=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos")
    parser.add_argument("--no-avif", action="store_true", help="skip the ladder with AVIF")
    parser.add_argument(
        "--extras", action="store_true", help="also the 60 MP, thread, arena and quality tables"
    )
    parser.add_argument("--large", action="store_true", help="only the 60 MP table")
    parser.add_argument(
        "--heic", action="store_true", help="only the HEIC and any other only-tables given"
    )
    parser.add_argument(
        "--animated", action="store_true", help="only the animated GIF and other only-tables"
    )
    args = parser.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
        return
    configure_vips()
    folder = photo_folder(args.photos)
    photos = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if args.limit:
        photos = photos[: args.limit]
    if not photos:
        raise SystemExit(f"no JPEGs in {folder} (bench/fetch-photos.sh fetches them)")
    load = os.getloadavg()
    print(
        f"bench/transcode on {CORES} cores, libvips {pyvips.version(0)}.{pyvips.version(1)}"
        f".{pyvips.version(2)} (pyvips), {len(photos)} photos from {folder}: "
        + ", ".join(Path(p).name for p in photos)
        + f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    if args.large or args.heic or args.animated:
        if args.large:
            large_table(Path(photos[0]))
        if args.heic:
            heic_table(args.rounds)
        if args.animated:
            animated_table(folder, args.rounds)
        load = os.getloadavg()
        print(f"\nload average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
        return
    ladder_table(photos, ["webp", "jpeg"], args.rounds)
    if not args.no_avif:
        ladder_table(photos, ["avif", "webp", "jpeg"], args.rounds)
    if args.extras:
        large_table(Path(photos[0]))
        concurrency_table(photos, ["webp", "jpeg"])
        arena_table(photos)
        one_core_ladder(photos[0])
        quality_sweep(photos[:3])
        avif_effort_sweep(photos[0])
        heic_table(1)
        animated_table(folder, 1)
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()
