/**
 * The engine section of `npm run bench`: the codex engine through the gateway against the same
 * engine reached directly, both started in this run, printed as gateway/direct ratios.
 *
 * (a) A cheap engine method (`thread/loaded/list`, answered from the engine's memory):
 *     throughput and p50/p99 at 16 connections x 2 in flight. That is the engine's knee on
 *     this machine: there it answers every request (about 14k req/s, p99 under 6 ms, quiet);
 *     past it the engine queues requests and then sheds them itself (-32001 `Server
 *     overloaded; retry later.`, from a few dozen in flight), so the p99 of both sides
 *     measures the engine's queue, not the gateway, and a ratio against an engine that
 *     refuses part of the work compares unlike things (32x4, measured before, was such a
 *     setting). Errors are counted apart from the answers; when a direct probe (as long as a
 *     measured run: shedding comes in bursts) has any at 16x2, both sides are measured at the
 *     largest setting of `FALLBACK_SETTINGS` where it had none. The setting used and why are
 *     printed with the figures.
 * (b) A streamed turn: the fake model sends `deltas` small text deltas and each side counts
 *     the `item/agentMessage/delta` notifications until `turn/completed`.
 *
 * A third side, `relay`, is relay-floor.ts in front of the direct engine: a WebSocket hop with
 * no logic at all. Against it the gateway's own work is told apart from what any Node hop on
 * `ws` costs. For (a), the CPU each side's processes spend per request (client = this
 * process, hop = relay or gateway, engine) is read from `/proc` and printed with the cores
 * they kept busy: when the direct run already keeps every core busy (2 on the machine this was
 * built on), a hop's CPU is taken from the engine's and the client's, and the throughput
 * ratio cannot beat direct CPU / gateway CPU per request — printed as the ceiling.
 *
 * The sides share one fake Responses API (loopback) and get the same `-c` overrides. After a
 * warm-up, `rounds` rounds alternate the order of the sides; each figure is the median of its
 * rounds, so a burst of load from elsewhere on a shared machine moves one round, not the
 * ratio. Everything started here is stopped before the section returns, on error too.
 */
import { resolveEngineBinary } from '../src/engine/binary.js'
import { FakeModel } from '../test/helpers/fake-model.js'
import { availableParallelism } from 'node:os'
import { cpuSeconds } from './proc.js'
import { CHEAP_METHOD, startDirectEngine, startGatewayEngine, startRelayFloor, type EngineEndpoint } from './engine-targets.js'
import { streamedTurn, type StreamResult } from './engine-stream.js'
import { roundTrips, type RoundTripResult } from './measure.js'
import { benchTempDir } from './targets.js'

export interface EngineBenchOptions {
  /** `--engine-bin`: the codex binary; default: the installed `@openai/codex`. */
  readonly binaryPath: string | null
  readonly durationMs: number
  readonly rounds: number
  /** Text deltas the fake model streams in the measured turn. */
  readonly deltas: number
}

interface Setting {
  readonly connections: number
  readonly inFlight: number
}

/** The engine's knee (see the header). */
const MEASURED_SETTING: Setting = { connections: 16, inFlight: 2 }
/** Tried in order, largest first, when the direct engine sheds load at the measured setting. */
const FALLBACK_SETTINGS: readonly Setting[] = [
  { connections: 8, inFlight: 2 },
  { connections: 8, inFlight: 1 },
  { connections: 4, inFlight: 1 },
  { connections: 1, inFlight: 1 },
]
const WARMUP_MS = 1_000
const TURN_TIMEOUT_MS = 120_000
/** The text of each streamed delta. */
const DELTA_TEXT = 'word'

const GOAL_THROUGHPUT = 0.9
const GOAL_P99_EXTRA_MS = 1
const GOAL_DELTA_RATE = 0.95

export async function runEngineBench(options: EngineBenchOptions): Promise<void> {
  const resolved = resolveEngineBinary({ explicitPath: options.binaryPath })
  if (!resolved.ok) {
    console.log(`\nengine benchmark skipped: ${resolved.reason}`)
    return
  }
  const binary = resolved.binary
  const model = await FakeModel.start({ defaultText: DELTA_TEXT.repeat(options.deltas), defaultDeltas: options.deltas })
  const started: EngineEndpoint[] = []
  const cwd = benchTempDir('cwd')
  try {
    const overrides = model.engineConfigOverrides()
    const direct = await startDirectEngine(binary, overrides)
    started.push(direct)
    const relay = await startRelayFloor(direct)
    started.push(relay)
    const gatewayStart = await startGatewayEngine(binary, overrides)
    if (gatewayStart.ok) started.push(gatewayStart.endpoint)

    console.log(`\nengine: codex ${binary.version ?? '(version unknown)'}, ${options.rounds} rounds (median), sides alternating; fake model on loopback`)
    if (!gatewayStart.ok) console.log(`gateway engine path unavailable: ${gatewayStart.reason}`)
    const sides = new Sides(direct, [relay, ...(gatewayStart.ok ? [gatewayStart.endpoint] : [])])

    for (const side of sides.inOrder(0)) {
      await sides.attempt(side, async () => {
        await roundTrips(side.url, 4, 4, WARMUP_MS, CHEAP_METHOD)
        await streamedTurn(side.url, cwd.path, options.deltas, TURN_TIMEOUT_MS)
      })
    }
    const { setting, why } = await chooseSetting(direct, options.durationMs)
    const calls = await inRounds(sides, options.rounds, (side) => measuredTrips(side, setting, options.durationMs))
    const streams = await inRounds(sides, options.rounds, (side) => streamedTurn(side.url, cwd.path, options.deltas, TURN_TIMEOUT_MS))
    printCalls(setting, why, options.durationMs, calls)
    printStreams(options.deltas, streams)
  } finally {
    for (const endpoint of started.reverse()) await endpoint.stop()
    await model.close()
    cwd.remove()
  }
}

/** The measured setting, or the largest fallback where the direct engine answered every request. */
async function chooseSetting(direct: EngineEndpoint, durationMs: number): Promise<{ setting: Setting; why: string | null }> {
  const atKnee = await roundTrips(direct.url, MEASURED_SETTING.connections, MEASURED_SETTING.inFlight, durationMs, CHEAP_METHOD)
  if (atKnee.errors === 0) return { setting: MEASURED_SETTING, why: null }
  const shed = `direct at ${label(MEASURED_SETTING)} had ${atKnee.errors} errors (${atKnee.firstError}) beside ${atKnee.count} answers`
  for (const setting of FALLBACK_SETTINGS) {
    const probe = await roundTrips(direct.url, setting.connections, setting.inFlight, durationMs, CHEAP_METHOD)
    if (probe.errors === 0) return { setting, why: `${shed}; ${label(setting)} is the largest setting tried where direct had none` }
  }
  const last = FALLBACK_SETTINGS[FALLBACK_SETTINGS.length - 1]!
  return { setting: last, why: `${shed}; direct had errors at every setting tried, measured at the smallest` }
}

/**
 * The sides being measured. The direct engine is the reference: its failure ends the run. Any
 * other side's first failure is reported and that side is left out of what follows, so the
 * direct figures are still printed.
 */
class Sides {
  constructor(
    readonly direct: EngineEndpoint,
    private others: readonly EngineEndpoint[],
  ) {}

  /** Every side still measured; odd rounds reverse the order so no side always goes first. */
  inOrder(round: number): EngineEndpoint[] {
    const sides = [this.direct, ...this.others]
    return round % 2 === 0 ? sides : sides.reverse()
  }

  /** `measure()`'s result, or undefined when a side other than direct failed it (and is dropped). */
  async attempt<T>(side: EngineEndpoint, measure: () => Promise<T>): Promise<T | undefined> {
    if (side === this.direct) return measure()
    try {
      return await measure()
    } catch (err) {
      console.log(`${side.name} engine path failed, no longer measured: ${err instanceof Error ? err.message : String(err)}`)
      this.others = this.others.filter((s) => s !== side)
      return undefined
    }
  }

  has(side: EngineEndpoint): boolean {
    return side === this.direct || this.others.includes(side)
  }
}

/** CPU per answered request of one run, in µs, by who spent it; and the cores all of them kept busy. */
interface CpuPerRequest {
  readonly client: number
  readonly hop: number
  readonly engine: number
  readonly cores: number
}

interface CallRun {
  readonly trips: RoundTripResult
  /** Null where CPU cannot be read (no `/proc`). */
  readonly cpu: CpuPerRequest | null
}

/** One run of (a), with the CPU its processes and this one (the client) spent on it. */
async function measuredTrips(side: EngineEndpoint, setting: Setting, durationMs: number): Promise<CallRun> {
  const { hop, engine } = side.processes()
  const hop0 = cpuSeconds(hop)
  const engine0 = cpuSeconds(engine)
  const client0 = process.cpuUsage()
  const t0 = performance.now()
  const trips = await roundTrips(side.url, setting.connections, setting.inFlight, durationMs, CHEAP_METHOD)
  const wallSeconds = (performance.now() - t0) / 1000
  const clientUsage = process.cpuUsage(client0)
  const hop1 = cpuSeconds(hop)
  const engine1 = cpuSeconds(engine)
  if (hop0 === null || hop1 === null || engine0 === null || engine1 === null || engine.length === 0 || trips.count === 0) return { trips, cpu: null }
  const clientSeconds = (clientUsage.user + clientUsage.system) / 1e6
  const perRequest = (seconds: number) => (seconds / trips.count) * 1e6
  return {
    trips,
    cpu: {
      client: perRequest(clientSeconds),
      hop: perRequest(hop1 - hop0),
      engine: perRequest(engine1 - engine0),
      cores: (clientSeconds + hop1 - hop0 + engine1 - engine0) / wallSeconds,
    },
  }
}

/** Per side still measured, one result per round. */
async function inRounds<T>(sides: Sides, rounds: number, measure: (side: EngineEndpoint) => Promise<T>): Promise<Map<EngineEndpoint, T[]>> {
  const results = new Map<EngineEndpoint, T[]>()
  for (let round = 0; round < rounds; round++) {
    for (const side of sides.inOrder(round)) {
      const result = await sides.attempt(side, () => measure(side))
      if (result !== undefined) results.set(side, [...(results.get(side) ?? []), result])
    }
  }
  for (const side of results.keys()) if (!sides.has(side)) results.delete(side)
  return results
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
const label = (s: Setting) => `${s.connections}x${s.inFlight}`
const f0 = (n: number) => n.toFixed(0)
const f2 = (n: number) => n.toFixed(2)
const verdict = (met: boolean) => (met ? 'met' : 'NOT met')

interface CallFigures {
  readonly perSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly errors: number
  readonly answers: number
  /** Medians of the rounds' CPU figures; null where CPU cannot be read. */
  readonly cpu: CpuPerRequest | null
}

function callFigures(runs: readonly CallRun[]): CallFigures {
  const trips = runs.map((r) => r.trips)
  const cpus = runs.map((r) => r.cpu).filter((c): c is CpuPerRequest => c !== null)
  return {
    perSecond: median(trips.map((r) => r.perSecond)),
    p50Ms: median(trips.map((r) => r.p50Ms)),
    p99Ms: median(trips.map((r) => r.p99Ms)),
    errors: trips.reduce((n, r) => n + r.errors, 0),
    answers: trips.reduce((n, r) => n + r.count, 0),
    cpu:
      cpus.length === runs.length
        ? { client: median(cpus.map((c) => c.client)), hop: median(cpus.map((c) => c.hop)), engine: median(cpus.map((c) => c.engine)), cores: median(cpus.map((c) => c.cores)) }
        : null,
  }
}

const cpuTotal = (c: CpuPerRequest) => c.client + c.hop + c.engine
const signed = (n: number) => `${n >= 0 ? '+' : ''}${f2(n)}`

function printCalls(setting: Setting, why: string | null, durationMs: number, calls: Map<EngineEndpoint, CallRun[]>): void {
  console.log(`\n(a) ${CHEAP_METHOD}: ${setting.connections} connections x ${setting.inFlight} in flight, ${durationMs / 1000}s per run`)
  console.log(why === null ? `    setting: ${label(MEASURED_SETTING)}, the engine's knee (direct had no errors there)` : `    setting: ${label(setting)} because ${why}`)
  console.log('    CPU columns: µs of CPU per answered request, spent by the client (this process), the hop (relay or gateway) and the engine')
  console.log('    side         req/s   p50ms   p99ms   errors/answers   client     hop  engine   total  cores busy')
  const figures = new Map<string, CallFigures>()
  for (const [side, runs] of calls) {
    const f = callFigures(runs)
    figures.set(side.name, f)
    const c = f.cpu
    const cpu = c === null ? '  n/a (no /proc)' : `${f0(c.client).padStart(6)} ${(side.name === 'direct' ? '-' : f0(c.hop)).padStart(7)} ${f0(c.engine).padStart(7)} ${f0(cpuTotal(c)).padStart(7)} ${f2(c.cores).padStart(11)}`
    console.log(`    ${side.name.padEnd(9)} ${f0(f.perSecond).padStart(8)} ${f2(f.p50Ms).padStart(7)} ${f2(f.p99Ms).padStart(7)}   ${`${f.errors}/${f.answers}`.padEnd(15)} ${cpu}`)
    const firstError = runs.find((r) => r.trips.firstError !== null)?.trips.firstError
    if (firstError) console.log(`    ${side.name} errors were: ${firstError}`)
  }
  const direct = figures.get('direct')!
  const relay = figures.get('relay')
  const gateway = figures.get('gateway')
  if (relay !== undefined) {
    console.log(`    relay / direct (a ws hop with no logic): throughput ${f2(relay.perSecond / direct.perSecond)}x; p99 ${signed(relay.p99Ms - direct.p99Ms)} ms`)
  }
  if (gateway === undefined) return
  const throughput = gateway.perSecond / direct.perSecond
  const p99Extra = gateway.p99Ms - direct.p99Ms
  console.log(
    `    gateway / direct: throughput ${f2(throughput)}x (goal >= ${GOAL_THROUGHPUT}x: ${verdict(throughput >= GOAL_THROUGHPUT)}); ` +
      `p99 ${signed(p99Extra)} ms (goal <= +${GOAL_P99_EXTRA_MS} ms: ${verdict(p99Extra <= GOAL_P99_EXTRA_MS)}); ` +
      `p50 ${signed(gateway.p50Ms - direct.p50Ms)} ms`,
  )
  if (relay !== undefined) console.log(`    gateway / relay: throughput ${f2(gateway.perSecond / relay.perSecond)}x; p99 ${signed(gateway.p99Ms - relay.p99Ms)} ms`)
  // When the direct run already keeps every core busy, a hop's CPU comes out of the engine's and
  // the client's: the throughput ratio cannot beat the ratio of CPU spent per request.
  if (direct.cpu !== null && gateway.cpu !== null) {
    const cores = availableParallelism()
    const ceiling = cpuTotal(direct.cpu) / cpuTotal(gateway.cpu)
    console.log(
      `    CPU: direct kept ${f2(direct.cpu.cores)} of ${cores} cores busy; the gateway spent ${f0(gateway.cpu.hop)} µs per request` +
        (relay?.cpu ? ` (a ws hop with no logic: ${f0(relay.cpu.hop)})` : '') +
        `; with the cores busy, gateway throughput can be at most ${f0(cpuTotal(direct.cpu))}/${f0(cpuTotal(gateway.cpu))} = ${f2(ceiling)}x of direct`,
    )
  }
}

function printStreams(deltas: number, streams: Map<EngineEndpoint, StreamResult[]>): void {
  console.log(`\n(b) item/agentMessage/delta: one turn of ${deltas} deltas (${DELTA_TEXT.length} characters each) per run, rate from the first delta to turn/completed`)
  console.log('    side       deltas/s   (each round)')
  const rates = new Map<string, number>()
  for (const [side, runs] of streams) {
    const rate = median(runs.map((r) => r.perSecond))
    rates.set(side.name, rate)
    console.log(`    ${side.name.padEnd(9)} ${f0(rate).padStart(9)}   (${runs.map((r) => f0(r.perSecond)).join(', ')})`)
  }
  const gateway = rates.get('gateway')
  if (gateway === undefined) return
  const ratio = gateway / rates.get('direct')!
  console.log(`    gateway / direct: delta rate ${f2(ratio)}x (goal >= ${GOAL_DELTA_RATE}x: ${verdict(ratio >= GOAL_DELTA_RATE)})`)
}
