// sharp (npm, its own prebuilt libvips) rendering the Pinhole ladder, as a peer, the
// way its docs recommend for several outputs of one input, with sharp.concurrency()
// set to the cores (sharp's default is 1 on glibc without jemalloc).
// Usage: node sharp_ladder.mjs '<json config>'; prints one JSON line of results.
// config.mode:
//   "clone": one sharp(buf) per photo, .clone() per output, all outputs in Promise.all
//            (each clone still runs its own libvips pipeline from the buffer, with
//            shrink-on-load for JPEG)
//   "raw":   decode once to raw pixels (upright, sRGB), every output from those pixels
import fs from 'node:fs'
import path from 'node:path'
import sharp from 'sharp'

const config = JSON.parse(process.argv[2])
sharp.cache(false)
sharp.concurrency(config.cores)

function encoder(pipeline, fmt, width) {
  const q = config.quality
  if (fmt === 'jpeg') return pipeline.jpeg({ quality: q.jpeg, progressive: width >= 474, optimiseCoding: true, mozjpeg: false })
  // The same per-size effort as Pinhole's (settings.Transcode.webp_large_effort).
  if (fmt === 'webp') return pipeline.webp({ quality: q.webp, effort: width >= 1200 ? config.webp_large_effort : config.webp_effort })
  if (fmt === 'avif') return pipeline.avif({ quality: q.avif, effort: config.avif_effort })
  return pipeline.png({ compressionLevel: 6 })
}

// "animated": sharp(buf, { animated: true }) (pages: -1), every frame resized per
// preset, animated WebP and GIF (sharp's cgif) with the source's delays and loop.
async function renderAnimated(data) {
  const meta = await sharp(data, { animated: true }).metadata()
  const root = sharp(data, { animated: true, failOn: 'error', limitInputPixels: false })
  const jobs = config.presets.flatMap((preset) => config.formats.map(async (fmt) => {
    let pipeline = root.clone()
    if (preset.width !== null) pipeline = pipeline.resize({ width: preset.width, withoutEnlargement: true })
    const width = Math.min(preset.width ?? meta.width, meta.width)
    pipeline = fmt === 'gif' ? pipeline.gif({ effort: config.gif_effort }) : encoder(pipeline, fmt, width)
    const { data: body, info } = await pipeline.toBuffer({ resolveWithObject: true })
    return { preset: preset.name, fmt, body, width: info.width, height: info.pageHeight ?? info.height }
  }))
  return Promise.all(jobs)
}

async function renderPhoto(data) {
  if (config.mode === 'animated') return renderAnimated(data)
  let base
  let upright
  if (config.mode === 'raw') {
    const { data: pixels, info } = await sharp(data, { failOn: 'error', limitInputPixels: false })
      .rotate().toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true })
    upright = info.width
    base = () => sharp(pixels, { raw: { width: info.width, height: info.height, channels: info.channels } })
  } else {
    const meta = await sharp(data).metadata()
    upright = (meta.orientation ?? 1) >= 5 ? meta.height : meta.width
    const root = sharp(data, { failOn: 'error', limitInputPixels: false }).rotate().toColourspace('srgb')
    base = () => root.clone()
  }
  const jobs = config.presets.flatMap((preset) => config.formats.map(async (fmt) => {
    let pipeline = base()
    if (preset.width !== null) pipeline = pipeline.resize({ width: preset.width, withoutEnlargement: true })
    const width = Math.min(preset.width ?? upright, upright)
    const { data: body, info } = await encoder(pipeline, fmt, width).toBuffer({ resolveWithObject: true })
    return { preset: preset.name, fmt, body, width: info.width, height: info.height }
  }))
  return Promise.all(jobs)
}

const inputs = config.photos.map((p) => fs.readFileSync(p))
const bytes = {}
let pixels = 0
const results = []
let seconds
try {
  await renderPhoto(inputs[0]) // warm-up, as the Python contenders do
  const started = process.hrtime.bigint()
  for (const input of inputs) results.push(await renderPhoto(input))
  seconds = Number(process.hrtime.bigint() - started) / 1e9
} catch (err) {
  // A peer that cannot do it (sharp's libvips has no HEVC decoder): the table says why.
  // The last line of a libvips error is its cause.
  const last = String(err.message ?? err).trim().split('\n').at(-1).trim().slice(0, 160)
  console.log(JSON.stringify({ error: `${err.name ?? 'Error'}: ${last}` }))
  process.exit(0)
}
results.forEach((outs, i) => {
  for (const o of outs) {
    pixels += o.width * o.height
    bytes[o.fmt] = (bytes[o.fmt] ?? 0) + o.body.length
    if (config.outdir) {
      const dir = path.join(config.outdir, String(i))
      fs.mkdirSync(dir, { recursive: true })
      fs.writeFileSync(path.join(dir, `${o.preset}.${o.fmt}`), o.body)
    }
  }
})
// Peak RSS of this process (VmHWM; ru_maxrss would include the parent's across fork+exec).
const hwm = fs.readFileSync('/proc/self/status', 'utf8').match(/VmHWM:\s+(\d+)/)[1]
console.log(JSON.stringify({ photos: inputs.length, seconds, megapixels: pixels / 1e6, bytes, peak_rss_mb: Number(hwm) / 1024, concurrency: sharp.concurrency() }))
