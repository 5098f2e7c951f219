/**
 * `npm run bench -- --engine-memory`: what idle clients cost with the codex engine behind the
 * gateway. The gateway runs as a separate process (so the benchmark's own client sockets are
 * not counted), once with `--engine off` and once with the real engine, each fresh; through
 * each, `connections` clients open and complete `initialize` + `initialized`, and stay idle.
 *
 * Sampled from /proc (VmRSS) a second after the last client is up, against a sample taken
 * before the first: the gateway's growth and, with the engine, the engine's growth (its pid is
 * the gateway's child), each divided by the number of clients. With the engine every client
 * also holds an upstream (one more socket in the gateway, one connection in the engine): the
 * engine's accepted connections are counted before and after, which shows the engine took
 * every one of them.
 *
 * The goal: the gateway's share with the engine at most `GOAL_RATIO` times its share without.
 * The fake Responses API is only there so the engine never reaches for the network; no turn runs.
 * The per-address upgrade limit and the per-connection rate limit are off, as in the other
 * sections (one client address opens every socket).
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type WebSocket from 'ws'
import { resolveEngineBinary } from '../src/engine/binary.js'
import { FakeModel } from '../test/helpers/fake-model.js'
import { engineConnections } from '../test/helpers/proc-sockets.js'
import { closed, initialized, open } from './measure.js'
import { childrenOf } from './proc.js'
import { benchTempDir, rssBytes, startTarget, type RunningTarget } from './targets.js'

export interface EngineMemoryOptions {
  /** `--engine-bin`: the codex binary; default: the installed `@openai/codex`. */
  readonly binaryPath: string | null
  /** Idle clients opened through each gateway. */
  readonly connections: number
}

const GOAL_RATIO = 2
/** Clients opening (and initializing) at once. */
const BATCH = 50
const SETTLE_MS = 1_000
const ENGINE_READY_TIMEOUT_MS = 60_000
/** Per client: its socket in this process, and in the gateway its socket and its upstream. */
const FDS_PER_CLIENT = 2

const mainJs = fileURLToPath(new URL('../src/main.js', import.meta.url))

interface Sample {
  readonly gateway: number
  readonly engine: number | null
  /** Connections the engine has accepted (null: no engine). */
  readonly engineConnections: number | null
}

interface MemoryShare {
  /** Bytes of gateway RSS growth per idle client. */
  readonly gatewayPerClient: number
  /** Bytes of engine RSS growth per idle client (null: no engine). */
  readonly enginePerClient: number | null
  readonly before: Sample
  readonly after: Sample
}

export async function runEngineMemoryBench(options: EngineMemoryOptions): Promise<void> {
  const n = options.connections
  const resolved = resolveEngineBinary({ explicitPath: options.binaryPath })
  if (!resolved.ok) {
    console.log(`\nengine memory benchmark skipped: ${resolved.reason}`)
    return
  }
  const fdLimit = openFileLimit()
  console.log(`\nengine memory: ${n} idle clients (initialize + initialized) through the gateway, codex ${resolved.binary.version ?? '(version unknown)'}`)
  console.log(`open-file limit (soft) here and in the processes started: ${fdLimit ?? 'unknown'}; a gateway with the engine needs about ${FDS_PER_CLIENT * n}`)
  if (fdLimit !== null && fdLimit < FDS_PER_CLIENT * n + 100) {
    console.log(`FAIL: raise the open-file limit (ulimit -n) above ${FDS_PER_CLIENT * n + 100} for ${n} clients`)
    return
  }

  const model = await FakeModel.start()
  try {
    const without = await measureGateway(['--engine', 'off'], n, false)
    const engineArgs = ['--engine', 'on', '--engine-bin', resolved.binary.path, '--engine-home', benchTempDir('memory-codex').path]
    for (const override of model.engineConfigOverrides()) engineArgs.push('--engine-config', override)
    const withEngine = await measureGateway(engineArgs, n, true)

    const kib = (b: number | null) => (b === null ? '-' : (b / 1024).toFixed(1))
    const mib = (b: number | null) => (b === null ? '-' : (b / 1024 / 1024).toFixed(1))
    console.log('\ngateway             gateway RSS MiB before/after   KiB/client   engine RSS MiB before/after   engine KiB/client')
    for (const [name, m] of [['engine off', without], ['engine on', withEngine]] as const) {
      console.log(
        `${name.padEnd(18)} ${`${mib(m.before.gateway)} / ${mib(m.after.gateway)}`.padStart(30)} ${kib(m.gatewayPerClient).padStart(12)}   ${`${mib(m.before.engine)} / ${mib(m.after.engine)}`.padStart(28)} ${kib(m.enginePerClient).padStart(19)}`,
      )
    }
    const { before, after } = withEngine
    if (before.engineConnections !== null && after.engineConnections !== null) {
      const gained = after.engineConnections - before.engineConnections
      console.log(`\nengine connections: ${before.engineConnections} before, ${after.engineConnections} with the clients up (${gained === n ? `one upstream per client` : `FAIL: ${gained} for ${n} clients`})`)
    }
    const ratio = without.gatewayPerClient > 0 ? withEngine.gatewayPerClient / without.gatewayPerClient : Number.POSITIVE_INFINITY
    const verdict = ratio <= GOAL_RATIO ? 'PASS' : 'FAIL'
    console.log(`\ngateway KiB/client with engine / without: ${ratio.toFixed(2)}x (goal: at most ${GOAL_RATIO}x) ${verdict}`)
    if (withEngine.enginePerClient !== null) {
      console.log(`total per idle client with the engine (gateway + engine): ${kib(withEngine.gatewayPerClient + withEngine.enginePerClient)} KiB`)
    }
  } finally {
    await model.close()
  }
}

/** A fresh gateway with `extraArgs`; the RSS growth of it (and its engine) for `n` idle clients. */
async function measureGateway(extraArgs: readonly string[], n: number, withEngine: boolean): Promise<MemoryShare> {
  const home = benchTempDir('memory-home')
  const args = [mainJs, '--listen', 'ws://127.0.0.1:0', '--home', home.path, '--http-rate-limit', '0', '--rpc-rate', '0', '--log-level', 'warn', ...extraArgs]
  const gateway = await startTarget({ name: 'gateway', command: process.execPath, args: () => args })
  const sockets: WebSocket[] = []
  try {
    const enginePid = withEngine ? await engineReady(gateway) : null
    await settle()
    const before = sample(gateway.pid, enginePid)
    for (let i = 0; i < n; i += BATCH) {
      const opened = await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, () => open(gateway.url)))
      sockets.push(...opened)
      await Promise.all(opened.map(initialized))
    }
    await settle()
    const after = sample(gateway.pid, enginePid)
    return {
      gatewayPerClient: Math.max(0, after.gateway - before.gateway) / n,
      enginePerClient: after.engine === null || before.engine === null ? null : Math.max(0, after.engine - before.engine) / n,
      before,
      after,
    }
  } finally {
    await Promise.all(sockets.map(closed))
    await gateway.stop()
    home.remove()
  }
}

function sample(gatewayPid: number, enginePid: number | null): Sample {
  if (enginePid === null) return { gateway: rssBytes(gatewayPid), engine: null, engineConnections: null }
  return { gateway: rssBytes(gatewayPid), engine: rssBytes(enginePid), engineConnections: engineConnections(enginePid) }
}

/** Waits for `/readyz` (the engine answered `initialize`), then finds the engine: the gateway's child. */
async function engineReady(gateway: RunningTarget): Promise<number> {
  const readyz = new URL('/readyz', gateway.url.replace(/^ws/, 'http')).toString()
  const deadline = performance.now() + ENGINE_READY_TIMEOUT_MS
  for (;;) {
    const status = await fetch(readyz).then((r) => r.status, () => 0)
    if (status === 200) break
    if (performance.now() > deadline) throw new Error(`the gateway's engine was not ready in ${ENGINE_READY_TIMEOUT_MS / 1000} s (/readyz ${status})`)
    await new Promise((r) => setTimeout(r, 200))
  }
  const pid = childrenOf(gateway.pid)[0]
  if (pid === undefined) throw new Error('the gateway reports ready but has no child process (its engine)')
  return pid
}

/** The soft limit on open files (children inherit it), from /proc/self/limits. */
function openFileLimit(): number | null {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
  if (m === null) return null
  return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1])
}

function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, SETTLE_MS))
}
