// sharp (npm, its own prebuilt libvips) rendering the Pinhole ladder, as a peer.
// Usage: node sharp_ladder.mjs '<json config>'; prints one JSON line of results.
// Each photo's outputs render concurrently (Promise.all), sharp's natural use.
import fs from 'node:fs'
import path from 'node:path'
import sharp from 'sharp'

const config = JSON.parse(process.argv[2])
sharp.cache(false)

function encoder(pipeline, fmt, width) {
  const q = config.quality
  if (fmt === 'jpeg') return pipeline.jpeg({ quality: q.jpeg, progressive: width >= 474, optimiseCoding: true, mozjpeg: false })
  // The same per-size effort as Pinhole's (settings.Transcode.webp_large_effort).
  if (fmt === 'webp') return pipeline.webp({ quality: q.webp, effort: width >= 1200 ? config.webp_large_effort : config.webp_effort })
  if (fmt === 'avif') return pipeline.avif({ quality: q.avif, effort: config.avif_effort })
  return pipeline.png({ compressionLevel: 6 })
}

async function renderOne(data, preset, fmt) {
  let pipeline = sharp(data, { failOn: 'error', limitInputPixels: false }).rotate().toColourspace('srgb')
  if (preset.width !== null) pipeline = pipeline.resize({ width: preset.width, withoutEnlargement: true })
  const meta = await sharp(data).metadata()
  const upright = (meta.orientation ?? 1) >= 5 ? meta.height : meta.width
  const width = Math.min(preset.width ?? upright, upright)
  const { data: body, info } = await encoder(pipeline, fmt, width).toBuffer({ resolveWithObject: true })
  return { preset: preset.name, fmt, body, width: info.width, height: info.height }
}

const inputs = config.photos.map((p) => fs.readFileSync(p))
const bytes = {}
let pixels = 0
const started = process.hrtime.bigint()
for (let round = 0; round < config.rounds; round++) {
  for (let i = 0; i < inputs.length; i++) {
    const outs = await Promise.all(
      config.presets.flatMap((preset) => config.formats.map((fmt) => renderOne(inputs[i], preset, fmt))))
    for (const o of outs) {
      pixels += o.width * o.height
      bytes[o.fmt] = (bytes[o.fmt] ?? 0) + o.body.length
      if (config.outdir && round === config.rounds - 1) {
        const dir = path.join(config.outdir, String(i))
        fs.mkdirSync(dir, { recursive: true })
        fs.writeFileSync(path.join(dir, `${o.preset}.${o.fmt}`), o.body)
      }
    }
  }
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9
// Peak RSS of this process (VmHWM; ru_maxrss would include the parent's across fork+exec).
const hwm = fs.readFileSync('/proc/self/status', 'utf8').match(/VmHWM:\s+(\d+)/)[1]
console.log(JSON.stringify({ photos: inputs.length * config.rounds, seconds, megapixels: pixels / 1e6, bytes, peak_rss_mb: Number(hwm) / 1024 }))
