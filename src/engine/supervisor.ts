/**
 * Runs the codex engine (`codex app-server`) as a child process on a private unix socket.
 *
 * Start, in this order:
 * 1. the socket directory (`<gateway home>/engine`) is created 0700, then checked: a
 *    directory, not a link, ours, mode exactly 0700, or the engine is not started (anyone who
 *    can reach the socket can drive the engine);
 * 2. a socket left by an earlier run is removed (the link: codex's real socket lives
 *    elsewhere, see 5), so readiness can only be this engine's; then an engine left running
 *    by a killed gateway (found by the pid file `engine/engine.pid`, written after each spawn
 *    and removed on exit) is stopped before the spawn (`orphan.ts`);
 * 3. spawn `codex app-server --listen unix://SOCKET -c cli_auth_credentials_store="ephemeral"
 *    [-c KEY=VALUE …]` with `CODEX_HOME` = the engine home. Never TCP: nothing but the
 *    gateway can reach the engine. The gateway's own `APP_SERVER_*` settings (tokens among
 *    them) are not passed on: the engine runs the model's commands with its environment.
 * 4. ready = a WebSocket over the socket answers `initialize`, tried every `readyPollMs`
 *    until `readyTimeoutMs` (30 s) has passed; then the engine is stopped and `unavailable`.
 * 5. once it answers, the socket it really listens on (codex links our path to one of its
 *    own) must be private to this user (socket-privacy.ts), or the engine is stopped and
 *    `unavailable` with the reason.
 *
 * State for health: `off | starting | running | restarting | unavailable`, the engine's
 * version, and a short reason that never holds a path or an argument (it reaches
 * `/healthz`). An early exit, a spawn failure or a timeout is logged with its cause.
 * The engine's stderr becomes one log line per line (`source: "engine"`), scrubbed and capped.
 *
 * `stop()` sends SIGTERM, then SIGKILL after `stopGraceMs` (5 s), and resolves once the
 * process has exited. `kill()` sends SIGKILL at once (an engine that stopped answering gets no
 * grace: it would not use it); that exit counts as unexpected. One run per `start()`: the
 * supervisor never restarts on its own. The restart policy sits on top, in `EngineService`
 * (`start({ restarting: true })` shows `restarting` until ready).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { lstatSync, mkdirSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { AppLogger } from '../log/logger.js'
import type { Clock } from '../clock.js'
import type { EngineBinary } from './binary.js'
import { stopOrphanEngine } from './orphan.js'
import { EngineOutputLog } from './output-log.js'
import { PID_FILE_NAME, removePidFile, writePidFile } from './pid-file.js'
import { EngineRpcClient } from './rpc-client.js'
import { socketExposure } from './socket-privacy.js'
import { errorCode as stringErrorCode } from '../util/error-code.js'

export type EngineState = 'off' | 'starting' | 'running' | 'restarting' | 'unavailable'

export interface EngineStatus {
  readonly state: EngineState
  readonly version: string | null
  /** Why the engine is not running (short, fixed wording plus codes), or null. */
  readonly reason: string | null
}

export interface EngineExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** True when `stop()` asked for it. */
  readonly expected: boolean
}

export interface EngineSupervisorOptions {
  readonly binary: EngineBinary
  /** The gateway's home; the socket lives in `<gatewayHome>/engine/`. */
  readonly gatewayHome: string
  /** `CODEX_HOME` for the engine: its config, MCP servers and thread history. */
  readonly engineHome: string
  /** Extra `-c KEY=VALUE` overrides, passed through unchanged (TOML values). */
  readonly configOverrides?: readonly string[]
  /** The gateway's version, sent in the readiness `initialize`'s clientInfo. */
  readonly clientVersion: string
  readonly log: AppLogger
  readonly timers: Clock
  /** The environment the engine starts from (`APP_SERVER_*` removed); defaults to `process.env`. */
  readonly env?: NodeJS.ProcessEnv
  readonly readyTimeoutMs?: number
  readonly readyPollMs?: number
  readonly stopGraceMs?: number
}

export const SOCKET_DIR_NAME = 'engine'
export const SOCKET_NAME = 'codex.sock'
export const GATEWAY_CLIENT_NAME = 'app-server-gateway'
const DEFAULT_READY_TIMEOUT_MS = 30_000
const DEFAULT_READY_POLL_MS = 100
const DEFAULT_STOP_GRACE_MS = 5_000
/** One readiness attempt's `initialize` may take this long before the next attempt. */
const INITIALIZE_ATTEMPT_TIMEOUT_MS = 5_000

/** One spawned engine process and what is known of it. */
interface Run {
  readonly child: ChildProcess
  readonly exited: Promise<void>
  ready: boolean
  stopping: boolean
  pollTimer: unknown
  killTimer: unknown
  probe: EngineRpcClient | null
}

export class EngineSupervisor {
  private stateValue: EngineState = 'off'
  private versionValue: string | null
  private reasonValue: string | null = null
  private run: Run | null = null
  /** An earlier gateway's engine being stopped before this one spawns. */
  private orphanStop: Promise<void> | null = null
  private readonly readyListeners = new Set<(socketPath: string) => void>()
  private readonly exitListeners = new Set<(exit: EngineExit) => void>()
  private readonly stateListeners = new Set<(status: EngineStatus) => void>()
  private readonly log: AppLogger
  readonly socketDir: string
  readonly socketPath: string
  readonly pidFile: string

  constructor(private readonly options: EngineSupervisorOptions) {
    this.log = options.log.child({ source: 'engine' })
    this.versionValue = options.binary.version
    this.socketDir = join(options.gatewayHome, SOCKET_DIR_NAME)
    this.socketPath = join(this.socketDir, SOCKET_NAME)
    this.pidFile = join(this.socketDir, PID_FILE_NAME)
  }

  get status(): EngineStatus {
    return { state: this.stateValue, version: this.versionValue, reason: this.reasonValue }
  }

  /** The running engine's process id, or null. */
  get pid(): number | null {
    return this.run?.child.pid ?? null
  }

  onReady(listener: (socketPath: string) => void): () => void {
    this.readyListeners.add(listener)
    return () => this.readyListeners.delete(listener)
  }

  onExit(listener: (exit: EngineExit) => void): () => void {
    this.exitListeners.add(listener)
    return () => this.exitListeners.delete(listener)
  }

  onState(listener: (status: EngineStatus) => void): () => void {
    this.stateListeners.add(listener)
    return () => this.stateListeners.delete(listener)
  }

  /**
   * Starts the engine unless one is already running or starting. Resolves once the attempt
   * has settled: `running`, or `unavailable` (see `status.reason`). Never rejects.
   */
  start(options: { restarting?: boolean } = {}): Promise<EngineStatus> {
    if (this.run !== null || this.orphanStop !== null) return this.settled()
    this.setState(options.restarting === true ? 'restarting' : 'starting', null)
    const dirProblem = this.prepareEngineHome() ?? this.prepareSocketDir()
    if (dirProblem !== null) {
      this.log.error({ event: 'engine.start_failed', cause: dirProblem }, `engine not started: ${dirProblem}`)
      this.setState('unavailable', dirProblem)
      return Promise.resolve(this.status)
    }
    this.stopOrphanThenSpawn()
    return this.settled()
  }

  /** SIGTERM, then SIGKILL after the grace period; resolves once the process has exited. */
  async stop(): Promise<void> {
    const run = this.run
    if (run === null) {
      if (this.stateValue !== 'unavailable') this.setState('off', null)
      await this.orphanStop
      return
    }
    if (!run.stopping) {
      run.stopping = true
      this.cancelReadiness(run)
      run.child.kill('SIGTERM')
      run.killTimer = this.options.timers.setTimeout(() => {
        this.log.warn({ event: 'engine.kill', graceMs: this.options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS }, 'engine did not exit after SIGTERM; sending SIGKILL')
        run.child.kill('SIGKILL')
      }, this.options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS)
    }
    await run.exited
  }

  /** SIGKILL now, without the SIGTERM grace; the exit is reported as unexpected. No-op without a process. */
  kill(): void {
    const run = this.run
    if (run === null || run.child.pid === undefined) return
    run.child.kill('SIGKILL')
  }

  /** Resolves when the current start attempt is decided (running or not). */
  private settled(): Promise<EngineStatus> {
    const decided = (s: EngineState): boolean => s === 'running' || s === 'unavailable' || s === 'off'
    if (decided(this.stateValue)) return Promise.resolve(this.status)
    return new Promise((resolve) => {
      const off = this.onState((status) => {
        if (!decided(status.state)) return
        off()
        resolve(status)
      })
    })
  }

  /**
   * codex refuses to start when `CODEX_HOME` names a directory that does not exist (it creates
   * only its default `~/.codex` itself), so a fresh machine needs the engine home made first:
   * private, like the codex CLI's own.
   */
  private prepareEngineHome(): string | null {
    try {
      mkdirSync(this.options.engineHome, { recursive: true, mode: 0o700 })
      return null
    } catch (err) {
      return `cannot create the engine home (${errorCode(err)})`
    }
  }

  private prepareSocketDir(): string | null {
    try {
      mkdirSync(this.socketDir, { recursive: true, mode: 0o700 })
    } catch (err) {
      return `cannot create the engine socket directory (${errorCode(err)})`
    }
    const st = lstatSync(this.socketDir)
    if (!st.isDirectory()) return 'the engine socket directory is not a directory'
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) return 'the engine socket directory is not owned by this user'
    if ((st.mode & 0o777) !== 0o700) return `the engine socket directory has mode ${(st.mode & 0o777).toString(8)}, not 700`
    try {
      unlinkSync(this.socketPath)
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') return `cannot remove the old engine socket (${errorCode(err)})`
    }
    return null
  }

  /** Spawns at once, or once an earlier gateway's engine is gone, unless stopped meanwhile. */
  private stopOrphanThenSpawn(): void {
    const graceMs = this.options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS
    const orphanStop = stopOrphanEngine({ pidFile: this.pidFile, socketPath: this.socketPath, log: this.log, timers: this.options.timers, graceMs })
    if (orphanStop === null) return this.spawnEngine()
    this.orphanStop = orphanStop.then(() => {
      this.orphanStop = null
      if (this.stateValue === 'starting' || this.stateValue === 'restarting') this.spawnEngine()
    })
  }

  private spawnEngine(): void {
    const args = ['app-server', '--listen', `unix://${this.socketPath}`, '-c', 'cli_auth_credentials_store="ephemeral"']
    for (const override of this.options.configOverrides ?? []) args.push('-c', override)
    let child: ChildProcess
    try {
      child = spawn(this.options.binary.path, args, {
        env: engineEnv(this.options.env ?? process.env, this.options.engineHome),
        stdio: ['ignore', 'pipe', 'pipe'],
        windowsHide: true,
      })
    } catch (err) {
      // Arguments node refuses outright (a NUL byte in a path or an override).
      const reason = spawnFailureReason(err)
      this.log.error({ event: 'engine.spawn_failed', cause: errorCode(err) }, `engine not started: ${reason}`)
      this.setState('unavailable', reason)
      return
    }
    let markExited!: () => void
    const run: Run = {
      child,
      exited: new Promise((resolve) => (markExited = resolve)),
      ready: false,
      stopping: false,
      pollTimer: null,
      killTimer: null,
      probe: null,
    }
    this.run = run
    this.recordPid(child.pid)
    const output = new EngineOutputLog(this.log)
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => output.stdout(line))
    createInterface({ input: child.stderr!, crlfDelay: Infinity }).on('line', (line) => output.stderr(line))

    // A spawn failure (missing, not executable) emits `error` and never `exit`.
    child.on('error', (err) => {
      // After a successful spawn an error is a failed kill(); the exit still comes.
      if (child.pid !== undefined) return
      const reason = spawnFailureReason(err)
      this.log.error({ event: 'engine.spawn_failed', cause: errorCode(err) }, `engine not started: ${reason}`)
      this.ended(run, { code: null, signal: null, expected: false }, reason)
      markExited()
    })
    child.once('exit', (code, signal) => {
      removePidFile(this.pidFile, this.log)
      const expected = run.stopping
      const how = signal !== null ? `signal ${signal}` : `code ${code ?? '?'}`
      const reason = expected ? null : run.ready ? `engine exited (${how})` : `engine exited during start-up (${how})`
      if (expected) this.log.info({ event: 'engine.exit', code, signal }, 'engine stopped')
      else this.log.error({ event: 'engine.exit', code, signal, duringStartup: !run.ready }, reason!)
      this.ended(run, { code, signal, expected }, reason)
      markExited()
    })
    this.log.info({ event: 'engine.spawn', pid: child.pid ?? null }, 'engine starting')
    const deadline = this.options.timers.monotonicMs() + (this.options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS)
    this.pollReadiness(run, deadline)
  }

  /** The pid file lets the next gateway stop this engine if we are killed before we can. */
  private recordPid(pid: number | undefined): void {
    if (pid === undefined) return // spawn failed: the error handler reports it
    try {
      writePidFile(this.pidFile, pid)
    } catch (err) {
      const code = errorCode(err)
      this.log.warn({ event: 'engine.pid_file_write_failed', code }, `could not write the engine pid file (${code}); a killed gateway would leave this engine running`)
    }
  }

  private pollReadiness(run: Run, deadline: number): void {
    run.pollTimer = this.options.timers.setTimeout(() => {
      run.pollTimer = null
      if (this.run !== run || run.stopping) return
      if (this.options.timers.monotonicMs() >= deadline) return this.readinessTimedOut()
      void this.tryInitialize(run).then((ok) => {
        if (this.run !== run || run.stopping) return
        if (ok) this.becameReady(run)
        else this.pollReadiness(run, deadline)
      })
    }, this.options.readyPollMs ?? DEFAULT_READY_POLL_MS)
  }

  /** One readiness attempt: connect over the socket and see `initialize` answered. */
  private async tryInitialize(run: Run): Promise<boolean> {
    let client: EngineRpcClient
    try {
      client = await EngineRpcClient.connect(this.socketPath, { log: this.log, timers: this.options.timers })
    } catch {
      return false // not listening yet
    }
    run.probe = client
    try {
      const result = await client.call('initialize', { clientInfo: { name: GATEWAY_CLIENT_NAME, title: null, version: this.options.clientVersion } }, INITIALIZE_ATTEMPT_TIMEOUT_MS)
      this.versionValue ??= versionFromUserAgent(result)
      return true
    } catch {
      return false
    } finally {
      run.probe = null
      client.close()
    }
  }

  private becameReady(run: Run): void {
    const exposure = socketExposure(this.socketPath)
    if (exposure !== null) return this.refuse({ event: 'engine.socket_exposed' }, exposure)
    run.ready = true
    this.log.info({ event: 'engine.ready', version: this.versionValue }, 'engine ready')
    this.setState('running', null)
    for (const listener of this.readyListeners) listener(this.socketPath)
  }

  private readinessTimedOut(): void {
    const seconds = Math.round((this.options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS) / 100) / 10
    this.refuse({ event: 'engine.not_ready', timeoutMs: this.options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS }, `engine not ready after ${seconds} s`)
  }

  /** An engine that started but may not be used: logged with why, `unavailable`, stopped. */
  private refuse(fields: Record<string, unknown>, reason: string): void {
    this.log.error(fields, reason)
    this.setState('unavailable', reason)
    // Its exit is not what the operator needs to hear about: the reason is.
    void this.stop()
  }

  private cancelReadiness(run: Run): void {
    if (run.pollTimer !== null) this.options.timers.clearTimeout(run.pollTimer)
    run.pollTimer = null
    run.probe?.close()
  }

  private ended(run: Run, exit: EngineExit, reason: string | null): void {
    if (this.run !== run) return
    this.run = null
    this.cancelReadiness(run)
    if (run.killTimer !== null) this.options.timers.clearTimeout(run.killTimer)
    // A stop after a readiness timeout keeps the timeout as the reason.
    if (exit.expected) {
      if (this.stateValue !== 'unavailable') this.setState('off', null)
    } else this.setState('unavailable', reason)
    for (const listener of this.exitListeners) listener(exit)
  }

  private setState(state: EngineState, reason: string | null): void {
    this.stateValue = state
    this.reasonValue = reason
    const status = this.status
    for (const listener of this.stateListeners) listener(status)
  }
}

/** The engine's environment: ours without the gateway's own settings, plus its home. */
function engineEnv(base: NodeJS.ProcessEnv, engineHome: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(base)) if (!key.startsWith('APP_SERVER_')) env[key] = value
  env.CODEX_HOME = engineHome
  return env
}

function spawnFailureReason(err: unknown): string {
  switch (errorCode(err)) {
    case 'ENOENT':
      return 'engine binary not found'
    case 'EACCES':
      return 'engine binary is not executable'
    default:
      return `engine could not be started (${errorCode(err)})`
  }
}

function errorCode(err: unknown): string {
  return stringErrorCode(err) ?? 'error'
}

/** `initialize`'s `userAgent` is `<clientInfo.name>/<engine version> (…)`. */
function versionFromUserAgent(result: unknown): string | null {
  const ua = (result as { userAgent?: unknown } | null)?.userAgent
  if (typeof ua !== 'string') return null
  return /^[^/\s]+\/(\d[^\s]*)/.exec(ua)?.[1] ?? null
}
