/**
 * The ways the benchmark reaches the codex engine, each started fresh and stopped by the
 * caller (and killed with the run's other processes should the run end early):
 * - direct: the engine started by the project's own `EngineSupervisor` on a private unix
 *   socket, reached at `ws+unix://SOCKET:/` — the floor the gateway is measured against;
 * - relay: relay-floor.ts in front of the direct engine — a hop with no logic, what any Node
 *   relay on `ws` costs;
 * - gateway: `app-server --engine on` as a subprocess, which starts its own engine with the
 *   same binary and the same `-c` overrides (`--engine-config`), reached at its token URL.
 * Each says which processes serve it (`processes`), so their CPU can be counted.
 *
 * The gateway half is "available" only once a client can have a cheap engine method answered
 * through it; until then the caller gets the reason (a refused flag, an engine that never came
 * up, an error for the method) instead of a target, and reports it.
 */
import { fileURLToPath } from 'node:url'
import type { EngineBinary } from '../src/engine/binary.js'
import { EngineSupervisor } from '../src/engine/supervisor.js'
import { createLogger } from '../src/log/logger.js'
import { systemClock } from '../src/clock.js'
import { VERSION } from '../src/version.js'
import { INTERNAL_ERROR } from '../src/rpc/errors.js'
import { roundTrips } from './measure.js'
import { childrenOf } from './proc.js'
import { benchTempDir, startTarget, trackProcess } from './targets.js'

export interface EngineEndpoint {
  readonly name: string
  readonly url: string
  /** The processes serving this side now: the hop in front of the engine (none for direct), and the engine. */
  processes(): { readonly hop: readonly number[]; readonly engine: readonly number[] }
  stop(): Promise<void>
}

/** The direct engine, with what a relay in front of it needs. */
export interface DirectEngine extends EngineEndpoint {
  readonly socketPath: string
}

export type GatewayStart = { readonly ok: true; readonly endpoint: EngineEndpoint } | { readonly ok: false; readonly reason: string }

/** The method both sides are probed with: the engine answers it from memory. */
export const CHEAP_METHOD = 'thread/loaded/list'
const GATEWAY_READY_TIMEOUT_MS = 40_000
const PROBE_TIMEOUT_MS = 5_000
const PROBE_RETRY_MS = 250
const MAX_REASON_CHARS = 200

const mainJs = fileURLToPath(new URL('../src/main.js', import.meta.url))
const relayJs = fileURLToPath(new URL('./relay-floor.js', import.meta.url))

/** The engine straight from the supervisor; its log lines (errors only) go to stderr. */
export async function startDirectEngine(binary: EngineBinary, configOverrides: readonly string[]): Promise<DirectEngine> {
  const gatewayHome = benchTempDir('direct-home')
  const engineHome = benchTempDir('direct-codex')
  const supervisor = new EngineSupervisor({
    binary,
    gatewayHome: gatewayHome.path,
    engineHome: engineHome.path,
    configOverrides,
    clientVersion: VERSION,
    log: createLogger('error', process.stderr),
    timers: systemClock,
  })
  let untrack = (): void => {}
  supervisor.onState(() => {
    const pid = supervisor.pid
    if (pid !== null) untrack = trackProcess(pid)
  })
  const stop = async (): Promise<void> => {
    await supervisor.stop()
    untrack()
    gatewayHome.remove()
    engineHome.remove()
  }
  const status = await supervisor.start()
  if (status.state !== 'running') {
    await stop()
    throw new Error(`the engine did not start: ${status.reason ?? status.state}`)
  }
  return {
    name: 'direct',
    url: `ws+unix://${supervisor.socketPath}:/`,
    socketPath: supervisor.socketPath,
    processes: () => ({ hop: [], engine: supervisor.pid === null ? [] : [supervisor.pid] }),
    stop,
  }
}

/** relay-floor.ts in front of `direct`'s engine. */
export async function startRelayFloor(direct: DirectEngine): Promise<EngineEndpoint> {
  const running = await startTarget({ name: 'relay', command: process.execPath, args: () => [relayJs, direct.socketPath] })
  return { name: 'relay', url: running.url, processes: () => ({ hop: [running.pid], engine: direct.processes().engine }), stop: () => running.stop() }
}

/**
 * The gateway with its own engine. Resolves to the reason when the gateway cannot serve the
 * engine path yet; never leaves a process running in that case.
 */
export async function startGatewayEngine(binary: EngineBinary, configOverrides: readonly string[]): Promise<GatewayStart> {
  const home = benchTempDir('gateway-home')
  const engineHome = benchTempDir('gateway-codex')
  const cleanup = () => {
    home.remove()
    engineHome.remove()
  }
  const args = [mainJs, '--listen', 'ws://127.0.0.1:0', '--home', home.path, '--engine', 'on', '--engine-bin', binary.path, '--engine-home', engineHome.path]
  for (const override of configOverrides) args.push('--engine-config', override)
  // One client address opening many sockets and sending thousands of requests would be
  // throttled by design: the per-address and per-connection limits are off for the measurement.
  args.push('--http-rate-limit', '0', '--rpc-rate', '0', '--log-level', 'warn')
  let running
  try {
    running = await startTarget({ name: 'gateway', command: process.execPath, args: () => args })
  } catch (err) {
    cleanup()
    return { ok: false, reason: shortReason(err) }
  }
  const stop = async (): Promise<void> => {
    await running.stop()
    cleanup()
  }
  const problem = await cheapMethodAnswered(running.url, GATEWAY_READY_TIMEOUT_MS)
  if (problem !== null) {
    await stop()
    return { ok: false, reason: problem }
  }
  // The gateway's one child is its engine.
  return { ok: true, endpoint: { name: 'gateway', url: running.url, processes: () => ({ hop: [running.pid], engine: childrenOf(running.pid) }), stop } }
}

/**
 * Asks for `CHEAP_METHOD` over a fresh connection until it is answered with a result (null)
 * or `timeoutMs` has passed (the last reason). The engine behind a gateway may still be
 * starting when the gateway already listens: a refused connection or -32603 (`engine
 * unavailable`) is tried again; any other error (say -32601, a gateway that does not forward
 * the method) is the answer and ends the wait at once.
 */
export async function cheapMethodAnswered(url: string, timeoutMs: number): Promise<string | null> {
  const deadline = performance.now() + timeoutMs
  let reason = 'no answer'
  while (performance.now() < deadline) {
    try {
      const probe = await withTimeout(roundTrips(url, 1, 1, 0, CHEAP_METHOD), PROBE_TIMEOUT_MS, `${CHEAP_METHOD} not answered in ${PROBE_TIMEOUT_MS / 1000} s`)
      if (probe.count === 1) return null
      reason = shortReason(`${CHEAP_METHOD} answered ${probe.firstError ?? 'with nothing'}`)
      if (!probe.firstError?.startsWith(`${INTERNAL_ERROR} `)) return reason
    } catch (err) {
      reason = shortReason(err)
    }
    await new Promise((r) => setTimeout(r, PROBE_RETRY_MS))
  }
  return `${reason} (still so after ${timeoutMs / 1000} s)`
}

function withTimeout<T>(promise: Promise<T>, ms: number, why: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(why)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

function shortReason(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err)
  const line = text.replace(/\x1b\[[0-9;]*m/g, '').split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 2).join(' ') || 'unknown error'
  return line.length > MAX_REASON_CHARS ? `${line.slice(0, MAX_REASON_CHARS)}…` : line
}
