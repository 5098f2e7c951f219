/**
 * `npm run bench -- --slow-readers`: what clients that never read cost. Ten clients connect
 * through the gateway (`--max-outbound-buffer`, 16 MiB by default) to a fake engine, stop
 * reading, and the engine floods each with `item/agentMessage/delta` notifications as fast as
 * the gateway takes them. The gateway holds the engine back once a client is over its bound
 * and closes the client 1008 `slow consumer` when it has not drained within the stall window.
 *
 * Everything runs in this process (the clients read nothing, so they hold nothing; the fake
 * engine keeps at most one batch of frames queued), so the process's RSS is the gateway's
 * cost. Sampled every `SAMPLE_MS`: the peak over the episode against a baseline taken before
 * the flood (after a full GC), per non-reading client, against the goal of `GOAL_BOUNDS` times
 * the bound each; then, once every client has been closed, RSS after a full GC (`--expose-gc`,
 * which `npm run bench` passes) and a settle period — the memory must come back.
 */
import type { Socket } from 'node:net'
import { pino } from 'pino'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config/load.js'
import { AttachedEngine } from '../test/helpers/engine-kit.js'
import { FakeEngine, type FakeEngineConnection } from '../test/helpers/fake-engine.js'
import { closed, initialized, open } from './measure.js'
import { benchTempDir } from './targets.js'

export interface SlowReadersOptions {
  readonly clients: number
  readonly maxOutboundBytes: number
}

const GOAL_BOUNDS = 2
const SAMPLE_MS = 50
const SETTLE_MS = 2_000
/** Deltas the engine offers each client: far more than any bound, so every client is held back. */
const DELTAS_PER_CLIENT = 2_000_000
const MB = 1024 * 1024
const DELTA = JSON.stringify({
  method: 'item/agentMessage/delta',
  params: { threadId: 'thr_bench', turnId: 'turn_bench', itemId: 'msg_bench', delta: 'The quick brown fox jumps over the lazy dog. '.repeat(3) },
})

const gc = (globalThis as { gc?: () => void }).gc

function fullGc(): void {
  gc?.()
  gc?.()
}

const rss = (): number => process.memoryUsage().rss
/** What JavaScript still references: the heap in use and the buffers outside it. */
const live = (): number => {
  const m = process.memoryUsage()
  return m.heapUsed + m.external
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export async function runSlowReadersBench(options: SlowReadersOptions): Promise<void> {
  const { clients: n, maxOutboundBytes: bound } = options
  const engine = await FakeEngine.start()
  const home = benchTempDir('slow-readers')
  const config = loadConfig(['--listen', 'ws://127.0.0.1:0', '--home', home.path, '--http-rate-limit', '0', '--max-outbound-buffer', String(bound)], { env: {}, dotenvPath: null })
  const app = await buildApp(config, { logger: pino({ level: process.env.BENCH_LOG ?? 'error' }), engine: { runner: new AttachedEngine(engine.socketPath) } })
  try {
    await app.listen({ host: '127.0.0.1', port: 0 })
    const url = `ws://127.0.0.1:${(app.server.address() as { port: number }).port}/?token=${app.wsAuth.queryToken}`
    const sockets = await Promise.all(Array.from({ length: n }, () => open(url)))
    await Promise.all(sockets.map((ws) => initialized(ws)))
    const upstreams = await clientUpstreams(engine, n)

    fullGc()
    await sleep(SETTLE_MS)
    const baseline = rss()
    const liveBefore = live()
    let peak = baseline
    const sampler = setInterval(() => (peak = Math.max(peak, rss())), SAMPLE_MS)

    for (const ws of sockets) (ws as unknown as { _socket: Socket })._socket.pause()
    const closes = sockets.map((ws) => new Promise<number>((resolve) => ws.once('close', (code: number) => resolve(code))))
    const floods = upstreams.map((u) => u.flood(DELTA, DELTAS_PER_CLIENT))
    const started = performance.now()
    // A non-reading client is closed once the stall window passes; resuming the client
    // sockets afterwards lets them read their close frames and end.
    await Promise.race([Promise.all(floods), sleep(60_000)])
    for (const ws of sockets) (ws as unknown as { _socket: Socket })._socket.resume()
    const codes = await Promise.all(closes)
    clearInterval(sampler)
    peak = Math.max(peak, rss())
    const episodeS = (performance.now() - started) / 1000
    const sent = (await Promise.all(floods)).reduce((a, b) => a + b, 0)

    await sleep(SETTLE_MS)
    fullGc()
    const after = rss()
    const liveAfter = live()

    const perClient = (peak - baseline) / n
    const mb = (b: number) => (b / MB).toFixed(1)
    console.log(`\nslow readers: ${n} clients that never read, --max-outbound-buffer ${mb(bound)} MiB, an engine flooding each with ${DELTA.length}-byte deltas`)
    console.log(`episode ${episodeS.toFixed(1)} s; ${sent} deltas left the engine in all; clients closed with ${[...new Set(codes)].join(', ')}`)
    console.log(`RSS: baseline ${mb(baseline)} MB, peak ${mb(peak)} MB, after close${gc ? ' + full GC' : ` + ${SETTLE_MS / 1000} s (no --expose-gc)`} ${mb(after)} MB`)
    const verdict = perClient <= GOAL_BOUNDS * bound ? 'ok' : 'OVER GOAL'
    console.log(`peak per non-reading client: ${mb(perClient)} MB = ${(perClient / bound).toFixed(2)}x the bound (goal <= ${GOAL_BOUNDS}x): ${verdict}`)
    console.log(`held after close: RSS ${mb(after - baseline)} MB over the baseline; live heap + buffers ${mb(liveAfter - liveBefore)} MB over theirs (the rest is memory the allocator keeps)`)
    await Promise.all(sockets.map(closed))
  } finally {
    await app.close()
    await engine.close()
    home.remove()
  }
}

/** The engine's connections that serve the benchmark's clients (the gateway's control connection is not one). */
async function clientUpstreams(engine: FakeEngine, n: number): Promise<FakeEngineConnection[]> {
  const found: FakeEngineConnection[] = []
  for (let i = 0; found.length < n; i++) {
    const conn = await engine.connection(i)
    const init = JSON.parse(await conn.waitFor((f) => f.method === 'initialize')) as { params?: { clientInfo?: { name?: string } } }
    if (init.params?.clientInfo?.name === 'bench') found.push(conn)
  }
  return found
}
