// ipx (npm) through its node API, as a peer for bench/render (not part of Pinhole).
// Usage: node ipx_server.mjs <dir> <port> <cores>
// As `ipx serve --dir` does (createIPX + ipxFSStorage + createIPXNodeServer), plus
// sharp.concurrency() set to the cores: sharp's default is 1 on glibc without jemalloc.
import http from 'node:http'
import sharp from 'sharp'
import { createIPX, createIPXNodeServer, ipxFSStorage } from 'ipx'

const [dir, port, cores] = process.argv.slice(2)
sharp.concurrency(Number(cores))
const ipx = createIPX({ storage: ipxFSStorage({ dir }) })
http.createServer(createIPXNodeServer(ipx)).listen(Number(port), '127.0.0.1', () => {
  console.log(`ipx on 127.0.0.1:${port}, sharp ${sharp.versions.sharp}, concurrency ${sharp.concurrency()}`)
})
