"""bench/transcode: the Pinhole engines against a naive pyvips loop and sharp.

Run from the repository root (sharp needs ``npm ci`` in bench/transcode first):

    .venv/bin/python bench/transcode/bench.py [--rounds 2] [--skip-sweeps]

Every contender runs in its own process and reports its own peak RSS
(``VmHWM``), so memory is that contender's alone. Each renders the same ladder of the
same real photographs with the same encoder settings; the last round's
outputs are scored with SSIM against a lossless reference resize of the
original (pyvips, transcoder/quality.py). Timings are wall clock on whatever
else the machine is doing: the caption printed with the tables says so.
"""

from __future__ import annotations

import argparse
import json
import os
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
from transcoder.quality import reference_resize, ssim  # noqa: E402

HERE = Path(__file__).resolve().parent
PHOTOS = ROOT / ".cache" / "photos"
OPAQUE_PHOTOS = [
    "autumn-2560x1600.jpg",
    "flow-5120x2880.jpg",
    "pastelhills-3200x2000.jpg",
    "flow-dark-720x1440-portrait.jpg",
]
DEFAULTS = Transcode()
QUALITY = {
    "jpeg": DEFAULTS.jpeg_quality,
    "webp": DEFAULTS.webp_quality,
    "avif": DEFAULTS.avif_quality,
}
_NO_LIMIT = 10_000_000


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
        header = pyvips.Image.new_from_buffer(data, "").autorot()
        source = SourceInfo(
            format="jpeg",
            width=header.width,
            height=header.height,
            bytes=len(data),
            has_alpha=False,
        )
        rendering = engine.render_ladder(data, source)
        return [(v.preset.name, v.fmt.value, v.width, v.height, v.body) for v in rendering.variants]

    return render


def _naive_runner(config: dict[str, Any]) -> Any:
    """What a first version looks like: thumbnail_buffer once per output."""
    from transcoder.vips_engine import VipsEngine

    options_of = VipsEngine(_settings(config))._save_options

    def render(data: bytes) -> list[tuple[str, str, int, int, bytes]]:
        out = []
        for preset in PRESETS:
            for fmt in config["formats"]:
                image = pyvips.Image.thumbnail_buffer(
                    data, preset.width or _NO_LIMIT, height=_NO_LIMIT, size="down"
                )
                suffix, options = options_of(Format(fmt), image.width)
                out.append(
                    (
                        preset.name,
                        fmt,
                        image.width,
                        image.height,
                        image.write_to_buffer(suffix, **options),
                    )
                )
        return out

    return render


def child(name: str, config: dict[str, Any]) -> None:
    if name.startswith("pinhole-"):
        limit_malloc_arenas()  # as the `pinhole` command does at start
    configure_vips()
    if name == "naive-pyvips":
        render = _naive_runner(config)
    else:
        render = _engine_runner(config, "pillow" if name.startswith("pinhole-pillow") else "vips")
    inputs = [Path(p).read_bytes() for p in config["photos"]]
    jobs = config.get("jobs", 1)
    pool = ThreadPoolExecutor(max_workers=jobs)
    bytes_by_format: dict[str, int] = defaultdict(int)
    pixels = 0
    started = time.perf_counter()
    for round_ in range(config["rounds"]):
        results = list(pool.map(render, inputs)) if jobs > 1 else [render(d) for d in inputs]
        for index, outputs in enumerate(results):
            for preset, fmt, width, height, body in outputs:
                pixels += width * height
                bytes_by_format[fmt] += len(body)
                if config.get("outdir") and round_ == config["rounds"] - 1:
                    folder = Path(config["outdir"]) / str(index)
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{preset}.{fmt}").write_bytes(body)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "photos": len(inputs) * config["rounds"],
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
    if name == "sharp":
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
    return result


_references: dict[tuple[str, int], pyvips.Image] = {}


def _reference(photo: str, width: int) -> pyvips.Image:
    key = (photo, width)
    if key not in _references:
        original = pyvips.Image.new_from_file(photo).autorot().colourspace("srgb").copy_memory()
        _references[key] = reference_resize(original, width).copy_memory()
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


def _base_config(photos: list[str], formats: list[str], rounds: int) -> dict[str, Any]:
    return {
        "photos": photos,
        "formats": formats,
        "rounds": rounds,
        "presets": [{"name": p.name, "width": p.width} for p in PRESETS],
        "quality": QUALITY,
        "avif_effort": DEFAULTS.avif_effort,
        "webp_effort": DEFAULTS.webp_effort,
        "webp_large_effort": DEFAULTS.webp_large_effort,
        "render_threads": DEFAULTS.render_threads,
    }


def _row(label: str, result: dict[str, Any], score: dict[str, float] | None, best: float) -> str:
    photos_per_s = result["photos"] / result["seconds"]
    per_photo_kb = {f: b / result["photos"] / 1024 for f, b in result["bytes"].items()}
    sizes = " ".join(f"{f}:{kb:,.0f}" for f, kb in sorted(per_photo_kb.items()))
    ssims = " ".join(f"{f}:{s:.4f}" for f, s in sorted((score or {}).items())) or "-"
    return (
        f"| {label} | {photos_per_s:.2f} | {photos_per_s / best:.2f}x | "
        f"{result['megapixels'] / result['seconds']:.1f} | {result['peak_rss_mb']:.0f} | "
        f"{sizes} | {ssims} |"
    )


HEADER = (
    "| contender | photos/s | vs best peer | output MP/s | peak RSS MB | KiB per photo | SSIM |\n"
    "|---|---:|---:|---:|---:|---|---|"
)

CONTENDERS: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
    # label, runner, config overrides, environment
    ("Pinhole vips engine (1 job)", "pinhole-vips", {}, {}),
    ("Pinhole vips engine (2 jobs in flight)", "pinhole-vips", {"jobs": 2}, {}),
    ("Pinhole Pillow-SIMD engine (1 job)", "pinhole-pillow", {}, {}),
    ("naive pyvips (thumbnail_buffer per output)", "naive-pyvips", {}, {}),
    ("sharp 0.34.5 (Promise.all per photo)", "sharp", {}, {}),
]
PEERS = {"naive-pyvips", "sharp"}


def ladder_table(photos: list[str], formats: list[str], rounds: int) -> None:
    print(f"\n### Ladder {'+'.join(formats)}: {len(photos)} photos x {rounds} rounds\n")
    print(HEADER)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, runner, overrides, env in CONTENDERS:
            # Warm-up (page cache, lazy imports, JIT-free but fair).
            run(runner, {**_base_config(photos[:1], formats, 1), **overrides}, env)
            outdir = Path(tmp) / f"{len(results)}"
            config = {**_base_config(photos, formats, rounds), **overrides, "outdir": str(outdir)}
            result = run(runner, config, env)
            results.append((label, runner, result, scores(outdir, photos)))
    best_peer = max(r["photos"] / r["seconds"] for _, name, r, _ in results if name in PEERS)
    for label, _, result, score in results:
        print(_row(label, result, score, best_peer))


def concurrency_table(photos: list[str], formats: list[str]) -> None:
    print("\n### VIPS threads per operation x encode threads (Pinhole vips engine, 1 job)\n")
    print("| VIPS_CONCURRENCY | render_threads | photos/s | peak RSS MB |\n|---:|---:|---:|---:|")
    for vips_threads in (1, 2):
        for render_threads in (2, 3, 4):
            config = {**_base_config(photos, formats, 1), "render_threads": render_threads}
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
        config = {**_base_config(photos, ["avif", "webp", "jpeg"], 4), "jobs": 3}
        r = run("pinhole-vips", config, env)
        print(f"| {label} | {r['photos'] / r['seconds']:.2f} | {r['peak_rss_mb']:.0f} |")


def large_table(rounds: int) -> None:
    source = pyvips.Image.new_from_file(str(PHOTOS / "pastelhills-3200x2000.jpg"))
    big = source.resize(9800 / source.width)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upscaled-60mp.jpg"
        big.write_to_file(str(path), Q=90)
        print(f"\n### One {big.width}x{big.height} JPEG ({big.width * big.height / 1e6:.0f} MP)\n")
        print(HEADER)
        rows = []
        for label, runner, overrides, env in CONTENDERS:
            if overrides.get("jobs", 1) > 1:
                continue
            config = {**_base_config([str(path)], ["webp", "jpeg"], 1), **overrides}
            rows.append((label, runner, run(runner, config, env)))
        full = {**_base_config([str(path)], ["avif", "webp", "jpeg"], 1)}
        rows.append(
            (
                "Pinhole vips engine, full ladder with AVIF",
                "pinhole-vips",
                run("pinhole-vips", full),
            )
        )
        best = max(r["photos"] / r["seconds"] for _, name, r in rows if name in PEERS)
        for label, _, result in rows:
            print(_row(label, result, None, best))


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
        original = pyvips.Image.new_from_file(photo).autorot().colourspace("srgb").copy_memory()
        for width in (1200, 736):
            images.append(reference_resize(original, width).copy_memory())
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
    config = {**_base_config([photo], ["avif", "webp", "jpeg"], 3), "render_threads": 1}
    r = run("pinhole-vips", config, {"VIPS_CONCURRENCY": "1"})
    print(
        f"\nFull ladder (15 variants incl. AVIF) of {Path(photo).name} on one core: "
        f"{r['seconds'] / r['photos']:.2f} s per photo"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-sweeps", action="store_true")
    parser.add_argument("--only-arenas", action="store_true", help="print only the arena table")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
        return
    configure_vips()
    photos = [str(PHOTOS / name) for name in OPAQUE_PHOTOS]
    load = os.getloadavg()
    print(
        f"bench/transcode on {os.cpu_count()} cores, libvips {pyvips.version(0)}."
        f"{pyvips.version(1)}, load average at start {load[0]:.1f}"
    )
    if args.only_arenas:
        arena_table(photos)
        return
    ladder_table(photos, ["webp", "jpeg"], args.rounds)
    ladder_table(photos, ["avif", "webp", "jpeg"], 1)
    large_table(1)
    concurrency_table(photos, ["webp", "jpeg"])
    arena_table(photos)
    one_core_ladder(str(PHOTOS / "autumn-2560x1600.jpg"))
    if not args.skip_sweeps:
        quality_sweep(photos[:3])
        avif_effort_sweep(str(PHOTOS / "autumn-2560x1600.jpg"))
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
