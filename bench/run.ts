/**
 * `npm run bench`: app-server beside a bare `ws` server (same token check, fixed JSON answer), both
 * started and measured in this run, printed as ratios. Optional: `--peer PATH` adds the real codex
 * app-server binary (`node_modules/.bin/codex`, from `@openai/codex`) as a third column.
 *
 * Then the engine section (engine-section.ts): the codex engine through the gateway against
 * the same engine reached directly. `--engine-only` runs just that; `--no-engine` skips it.
 * `--engine-memory` runs only the idle-memory comparison of engine-memory.ts instead
 * (`--connections` clients through a gateway with the engine and one without).
 *
 *   npm run bench -- [--duration 5] [--concurrency 16] [--connections 1000] [--peer /path/to/codex]
 *                    [--engine-only | --no-engine] [--engine-bin PATH] [--engine-duration 3]
 *                    [--engine-rounds 3] [--deltas 8000]
 *   npm run bench -- --engine-memory [--connections 1000] [--engine-bin PATH]
 *
 * `--slow-readers` runs only slow-readers.ts: clients that never read, flooded by an engine
 * (peak RSS per client against the bound, and RSS once they are closed).
 *
 *   npm run bench -- --slow-readers [--clients 10] [--max-outbound-buffer 16777216]
 *
 * `--flood` runs only flood.ts: `--connections` (200 here) clients flooding a gateway with its
 * default limits, while `/healthz` and a fresh client's `account/read` are timed.
 *
 *   npm run bench -- --flood [--connections 200] [--duration 10] [--flood-rounds 3]
 *
 * A number option that is not a positive number is refused with its name, before anything starts.
 */
import { parseArgs } from 'node:util'
import { runEngineMemoryBench } from './engine-memory.js'
import { runEngineBench } from './engine-section.js'
import { runFloodBench } from './flood.js'
import { runSlowReadersBench } from './slow-readers.js'
import { handshakes, idleMemory, roundTrips, type RoundTripResult } from './measure.js'
import { bareTarget, codexTarget, projectTarget, startTarget, type Target } from './targets.js'

const { values } = parseArgs({
  options: {
    duration: { type: 'string' },
    concurrency: { type: 'string', default: '16' },
    connections: { type: 'string' },
    peer: { type: 'string' },
    'engine-only': { type: 'boolean', default: false },
    'no-engine': { type: 'boolean', default: false },
    'engine-memory': { type: 'boolean', default: false },
    'engine-bin': { type: 'string' },
    'engine-duration': { type: 'string', default: '3' },
    'engine-rounds': { type: 'string', default: '3' },
    deltas: { type: 'string', default: '8000' },
    'slow-readers': { type: 'boolean', default: false },
    flood: { type: 'boolean', default: false },
    'flood-rounds': { type: 'string', default: '3' },
    clients: { type: 'string', default: '10' },
    'max-outbound-buffer': { type: 'string', default: String(16 * 1024 * 1024) },
  },
})
/** A number option's value; a missing, malformed or non-positive one ends the run with its name. */
function positive(name: string, text: string): number {
  const n = Number(text)
  if (text.trim() === '' || !Number.isFinite(n) || n <= 0) {
    console.error(`bench: --${name} must be a positive number, got ${JSON.stringify(text.slice(0, 40))}`)
    process.exit(2)
  }
  return n
}
for (const name of ['duration', 'concurrency', 'connections', 'engine-duration', 'engine-rounds', 'deltas', 'flood-rounds', 'clients', 'max-outbound-buffer'] as const) {
  const text = values[name]
  if (text !== undefined) positive(name, text)
}
const durationMs = Number(values.duration ?? (values.flood ? '10' : '5')) * 1000
const concurrency = Number(values.concurrency)
const connections = Number(values.connections ?? (values.flood ? '200' : '1000'))

interface Row {
  name: string
  handshakesPerSecond: number
  bytesPerConnection: number
  one: RoundTripResult
  many: RoundTripResult
}

// The round trip is `account/read` (no credential: `{account:null, requiresOpenaiAuth:true}`),
// the same answer the bare server sends as its fixed JSON.
const METHOD = 'account/read'

async function measure(target: Target): Promise<Row> {
  // Memory first, on a fresh process: load tests grow the heap, and idle connections would
  // then fit into memory that is already committed, hiding their cost.
  const fresh = await startTarget(target)
  let mem
  try {
    mem = await idleMemory(fresh.url, fresh.pid, connections)
  } finally {
    await fresh.stop()
  }
  const t = await startTarget(target)
  try {
    await handshakes(t.url, 500, concurrency) // warm-up
    await roundTrips(t.url, 4, 8, 500, METHOD) // warm-up
    const one = await roundTrips(t.url, 1, 8, durationMs, METHOD)
    const many = await roundTrips(t.url, 32, 8, durationMs, METHOD)
    const hs = await handshakes(t.url, durationMs, concurrency)
    return { name: t.name, handshakesPerSecond: hs.perSecond, bytesPerConnection: mem.bytesPerConnection, one, many }
  } finally {
    await t.stop()
  }
}

async function gatewaySection(): Promise<void> {
  const targets: Target[] = [projectTarget(), bareTarget()]
  if (values.peer) targets.push(codexTarget(values.peer))

  const rows: Row[] = []
  for (const target of targets) rows.push(await measure(target))
  const [project, bare] = rows as [Row, Row, ...Row[]]

  const kib = (b: number) => (b / 1024).toFixed(1)
  const f0 = (n: number) => n.toFixed(0)
  const f1 = (n: number) => n.toFixed(1)
  const ratio = (a: number, b: number) => (a / b).toFixed(2) + 'x'
  console.log('\napp-server runs with --http-rate-limit 0 --rpc-rate 0 (one client address, thousands of requests).')
  console.log(`round trips: 1 and 32 connections x 8 in flight for ${durationMs / 1000}s each (request: account/read)`)
  console.log(`handshakes: ${concurrency} concurrent for ${durationMs / 1000}s; idle memory: ${connections} connections, each after one initialize\n`)
  console.log('target        1conn req/s  p50ms  p99ms   32conn req/s  p50ms  p99ms   handshakes/s  KiB/idle conn')
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(13)} ${f0(r.one.perSecond).padStart(11)} ${f1(r.one.p50Ms).padStart(6)} ${f1(r.one.p99Ms).padStart(6)}   ${f0(r.many.perSecond).padStart(12)} ${f1(r.many.p50Ms).padStart(6)} ${f1(r.many.p99Ms).padStart(6)}   ${f0(r.handshakesPerSecond).padStart(12)}  ${kib(r.bytesPerConnection).padStart(13)}`,
    )
  }
  function ratios(label: string, a: Row, b: Row): void {
    console.log(
      `${label}: throughput 1conn ${ratio(a.one.perSecond, b.one.perSecond)}, 32conn ${ratio(a.many.perSecond, b.many.perSecond)}; ` +
        `p99 1conn ${ratio(a.one.p99Ms, b.one.p99Ms)}, 32conn ${ratio(a.many.p99Ms, b.many.p99Ms)}; ` +
        `handshakes ${ratio(a.handshakesPerSecond, b.handshakesPerSecond)}; memory/conn ${ratio(a.bytesPerConnection, b.bytesPerConnection)}`,
    )
  }
  console.log('')
  ratios('app-server / bare ws', project, bare)
  const codex = rows[2]
  if (codex) ratios('app-server / codex  ', project, codex)
}

if (values['engine-only'] && values['no-engine']) throw new Error('--engine-only and --no-engine exclude each other')
const onlyOne = values['engine-memory'] || values['slow-readers'] || values.flood
if (values['engine-memory']) await runEngineMemoryBench({ binaryPath: values['engine-bin'] ?? null, connections })
else if (values.flood) await runFloodBench({ connections, durationMs, rounds: Number(values['flood-rounds']) })
else if (values['slow-readers']) await runSlowReadersBench({ clients: Number(values.clients), maxOutboundBytes: Number(values['max-outbound-buffer']) })
else if (!values['engine-only']) await gatewaySection()
if (!values['no-engine'] && !onlyOne) {
  await runEngineBench({
    binaryPath: values['engine-bin'] ?? null,
    durationMs: Number(values['engine-duration']) * 1000,
    rounds: Number(values['engine-rounds']),
    deltas: Number(values.deltas),
  })
}
