/**
 * `npm run bench`: app-server beside a bare `ws` server (same token check, fixed JSON answer),
 * both started and measured in this run, printed as ratios. Optional: `--peer PATH` adds the
 * real codex app-server binary (shared/spec/peer.md) as a third column.
 *
 *   npm run bench -- [--duration 5] [--concurrency 16] [--connections 1000] [--peer /path/to/codex]
 */
import { parseArgs } from 'node:util'
import { handshakes, idleMemory } from './measure.js'
import { bareTarget, codexTarget, projectTarget, startTarget, type Target } from './targets.js'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '16' },
    connections: { type: 'string', default: '1000' },
    peer: { type: 'string' },
  },
})
const durationMs = Number(values.duration) * 1000
const concurrency = Number(values.concurrency)
const connections = Number(values.connections)

interface Row {
  name: string
  handshakesPerSecond: number
  bytesPerConnection: number
}

async function measure(target: Target): Promise<Row> {
  const t = await startTarget(target)
  try {
    await handshakes(t.url, 500, concurrency) // warm-up
    const hs = await handshakes(t.url, durationMs, concurrency)
    const mem = await idleMemory(t.url, t.pid, connections)
    return { name: t.name, handshakesPerSecond: hs.perSecond, bytesPerConnection: mem.bytesPerConnection }
  } finally {
    await t.stop()
  }
}

const targets: Target[] = [projectTarget(), bareTarget()]
if (values.peer) targets.push(codexTarget(values.peer, 45_000 + Math.floor(Math.random() * 1000)))

const rows: Row[] = []
for (const target of targets) rows.push(await measure(target))
const [project, bare] = rows as [Row, Row, ...Row[]]

const kib = (b: number) => (b / 1024).toFixed(1)
console.log(`\nhandshakes: ${concurrency} concurrent for ${durationMs / 1000}s; idle memory: ${connections} connections, each after one initialize\n`)
console.log('target        handshakes/s   KiB/idle conn')
for (const r of rows) console.log(`${r.name.padEnd(13)} ${r.handshakesPerSecond.toFixed(0).padStart(12)}   ${kib(r.bytesPerConnection).padStart(13)}`)
console.log('')
console.log(`ratio app-server / bare ws: handshakes ${(project.handshakesPerSecond / bare.handshakesPerSecond).toFixed(2)}x, memory/conn ${(project.bytesPerConnection / bare.bytesPerConnection).toFixed(2)}x`)
const codex = rows[2]
if (codex) {
  console.log(`ratio app-server / codex:   handshakes ${(project.handshakesPerSecond / codex.handshakesPerSecond).toFixed(2)}x, memory/conn ${(project.bytesPerConnection / codex.bytesPerConnection).toFixed(2)}x`)
}
