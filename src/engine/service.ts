/**
 * The gateway's engine: whether there is one, its state, the gateway's own control connection
 * to it, and the upstream each client connection gets. Framework-free; `plugins/engine.ts`
 * wires it.
 *
 * Policy, in the order things happen:
 * 1. `--engine off`: no engine; state `off`. `auto` (the default): an engine when a binary
 *    resolves, else `off` with the reason (logged at info, shown in the banner). `on`: a missing
 *    binary is an error (logged) and the state is `unavailable`; with an explicit `--engine-bin`
 *    it is spawned anyway, so the restart policy (6) retries it until it appears. Otherwise
 *    the binary is resolved once, at construction. `expected` (an
 *    engine is configured) is what `/readyz` waits on.
 * 2. `start()` does not wait for readiness: the listener comes up at once, the state reads
 *    `starting` until the engine answers `initialize`.
 * 3. On every engine start: the control connection opens, the credentials are handed off
 *    (API key → `account/login/start {type:"apiKey"}`, ChatGPT managed or external →
 *    `{type:"chatgptAuthTokens"}`, none → `account/logout`), then the engine's
 *    `account/read` answer is kept for its `requiresOpenaiAuth`. No client's upstream opens
 *    before that start's first hand-off has been answered (`openUpstream` waits for it), so a
 *    restarted engine never serves a client without the credentials. Every credential change
 *    (login, logout, a refresh the gateway performs) hands off again. Hand-offs run one at a
 *    time and each sends the credential current when it runs, so the engine ends up with the
 *    latest. A failed hand-off is logged by error type or code only, never with its text.
 * 4. The engine's `account/chatgptAuthTokens/refresh` — on the control connection or on any
 *    client's upstream — is answered by the account service's 401 recovery with fresh
 *    tokens, or with -32603 `token refresh failed`.
 * 5. Keepalive: the control connection pings every 10 s; when nothing has come back for 30 s
 *    the engine is hung (a stopped or wedged process keeps its socket open): logged
 *    (`engine.hung`), SIGKILLed, and restarted as after a crash. A control connection that
 *    cannot be opened, or closes while the engine still runs a second later, is treated the
 *    same way (`engine.control_lost`): without it there are no hand-offs and no keepalive, and
 *    no client upstream opens.
 * 6. Any end of an engine the gateway did not ask for — an exit (crash, SIGKILL), a spawn
 *    failure (binary missing or not executable), an exit during start-up, no readiness in
 *    30 s, a hang — drops the control connection; each client's upstream ends itself (its
 *    in-flight requests get -32603 `engine unavailable`, the client is closed with 1012);
 *    clients without an upstream are untouched. Then a restart waits `RestartBackoff`'s
 *    delay (200 ms × 2^(n−1) ±10 %, at most 30 s, back to 200 ms after a minute up): the
 *    engine is retried for as long as the gateway runs (a binary that went missing or lost
 *    its execute bit, say during an upgrade, may come back), never in a storm. While it waits the state reads `restarting` when the engine had been
 *    running, `unavailable` when it never became ready, with the cause as the reason (no
 *    path, no argument); a retry after failed starts reads `starting`. `/readyz` is 503
 *    throughout (it keys on `running`).
 * 7. `stop()` (after the client drain) cancels a pending restart, then SIGTERM, SIGKILL after
 *    the supervisor's grace.
 */
import type { ChatgptAuthTokens } from '../account/service.js'
import type { Credential } from '../account/types.js'
import type { Clock } from '../clock.js'
import type { EngineSettings } from '../config/types.js'
import { withheldError, type AppLogger } from '../log/logger.js'
import { INTERNAL_ERROR, RpcError } from '../rpc/errors.js'
import type { RequestIdAllocator } from '../rpc/server-requests.js'
import { resolveEngineBinary, type EngineBinaryResolution } from './binary.js'
import { RestartBackoff } from './restart-backoff.js'
import { EngineRpcClient, EngineRpcError } from './rpc-client.js'
import { EngineSupervisor, GATEWAY_CLIENT_NAME, type EngineExit, type EngineStatus } from './supervisor.js'
import { EngineUnavailableError, EngineUpstream, type UpstreamClient } from './upstream.js'

/** What the service needs of the engine process; `EngineSupervisor` is the real one. */
export interface EngineRunner {
  readonly status: EngineStatus
  readonly socketPath: string
  /** The engine's process id while it runs, when there is a process of ours. */
  readonly pid?: number | null
  start(options?: { restarting?: boolean }): Promise<EngineStatus>
  stop(): Promise<void>
  /** SIGKILL now (a hung engine); its exit comes through `onExit` as unexpected. */
  kill(): void
  onReady(listener: (socketPath: string) => void): () => void
  onExit(listener: (exit: EngineExit) => void): () => void
}

/** What the service needs of the account service. */
export interface EngineAccounts {
  readonly current: Credential | null
  chatgptTokens(): ChatgptAuthTokens | null
  onCredentialChange(listener: () => void): () => void
  recoverAfterUnauthorized(): Promise<ChatgptAuthTokens>
}

export interface EngineServiceOptions {
  readonly settings: EngineSettings
  readonly gatewayHome: string
  /** The gateway's version (clientInfo of its own connections). */
  readonly clientVersion: string
  readonly accounts: EngineAccounts
  readonly serverRequestIds: RequestIdAllocator
  readonly log: AppLogger
  readonly clock: Clock
  /** An engine process other than the one resolved and spawned from the settings (tests). */
  readonly runner?: EngineRunner
  readonly resolveBinary?: (explicitPath: string | null) => EngineBinaryResolution
  /** The control connection's keepalive: its own clock (tests drive it alone) and intervals. */
  readonly keepAlive?: { readonly timers?: Clock; readonly intervalMs?: number; readonly timeoutMs?: number }
  /** The restart delay's jitter source, in [0, 1) (tests fix it). */
  readonly random?: () => number
}

const CONTROL_CALL_TIMEOUT_MS = 30_000
const TOKEN_REFRESH_METHOD = 'account/chatgptAuthTokens/refresh'
const REFRESH_FAILED = 'token refresh failed'
const HUNG_REASON = 'engine stopped answering'
const CONTROL_LOST_REASON = 'lost the control connection'
/** A crashing engine closes the control connection just before its exit is seen: wait that long before calling the loss a fault of its own. */
const CONTROL_LOSS_GRACE_MS = 1_000

export class EngineService {
  private readonly runner: EngineRunner | null
  /** Why there is no engine at all (off, or no binary), or null when there is one. */
  private readonly absentReason: string | null
  private control: EngineRpcClient | null = null
  private requiresOpenaiAuthValue: boolean | null = null
  private handOffChain: Promise<void> = Promise.resolve()
  private handOffQueued = false
  private starting: Promise<EngineStatus> | null = null
  private readonly backoff: RestartBackoff
  private restartTimer: unknown = null
  private restartCount = 0
  /** Why the engine is down while a restart waits or runs; null once it is up. */
  private downReason: string | null = null
  /** The state while a restart waits: `restarting` after a run that was up, `unavailable` after a failed start. */
  private waitState: 'restarting' | 'unavailable' = 'unavailable'
  /** The current run has become ready. */
  private up = false
  /** The keepalive killed the current run. */
  /** Why the gateway itself killed the current run (a hang, a lost control connection), or null. */
  private killReason: string | null = null
  private controlLossTimer: unknown = null
  private stopping = false
  /** Settles once the current run's first credentials hand-off is answered (or the run is gone). */
  private handedOff: Promise<void> = Promise.resolve()
  private settleHandedOff: () => void = () => {}
  private readonly log: AppLogger
  private readonly unsubscribe: (() => void)[] = []

  constructor(private readonly options: EngineServiceOptions) {
    this.log = options.log.child({ source: 'engine' })
    this.backoff = new RestartBackoff({ clock: options.clock, ...(options.random ? { random: options.random } : {}) })
    const { settings } = options
    if (options.runner !== undefined) {
      this.runner = options.runner
      this.absentReason = null
    } else if (settings.mode === 'off') {
      this.runner = null
      this.absentReason = 'turned off'
    } else {
      const resolved = (options.resolveBinary ?? ((explicitPath) => resolveEngineBinary({ explicitPath })))(settings.binary)
      // `--engine on` with an explicit binary that is not there (yet): the operator named it, so
      // it is spawned anyway and each failed spawn backs off like any bad start — a binary
      // installed later is taken up without restarting the gateway.
      const binary = resolved.ok ? resolved.binary : settings.mode === 'on' && settings.binary !== null ? { path: settings.binary, version: null } : null
      if (!resolved.ok && binary !== null) this.log.error({ event: 'engine.missing' }, `engine expected but not available yet: ${resolved.reason}; retrying`)
      if (binary !== null) {
        this.runner = new EngineSupervisor({
          binary,
          gatewayHome: options.gatewayHome,
          engineHome: settings.home,
          configOverrides: settings.configOverrides,
          clientVersion: options.clientVersion,
          log: options.log,
          timers: options.clock,
        })
        this.absentReason = null
      } else {
        this.runner = null
        // Reached only when nothing resolved (a resolved binary always makes a runner).
        const reason = resolved.ok ? 'no engine binary' : resolved.reason
        this.absentReason = reason
        if (settings.mode === 'on') this.log.error({ event: 'engine.missing' }, `engine expected but not available: ${reason}`)
        else this.log.info({ event: 'engine.missing' }, `running without an engine: ${reason}`)
      }
    }
  }

  /** For `/healthz`: never a path or an argument. */
  /** Restarts scheduled since the gateway started (after crashes, hangs and failed starts). */
  get restarts(): number {
    return this.restartCount
  }

  get status(): EngineStatus {
    if (this.runner !== null) {
      const status = this.runner.status
      if (this.restartTimer !== null) return { state: this.waitState, version: status.version, reason: this.downReason }
      if (status.state === 'starting' || status.state === 'restarting') return { ...status, reason: this.downReason ?? status.reason }
      return status
    }
    const state = this.options.settings.mode === 'on' ? 'unavailable' : 'off'
    return { state, version: null, reason: this.absentReason }
  }

  /** An engine is configured: the gateway is not ready while it does not run. */
  get expected(): boolean {
    return this.runner !== null || this.options.settings.mode === 'on'
  }

  get running(): boolean {
    return this.runner !== null && this.runner.status.state === 'running'
  }

  /** The engine process's id while it runs, or null. */
  get pid(): number | null {
    return this.runner?.pid ?? null
  }

  /** Resolves once the last start attempt is decided (running or not); at once without one. */
  settled(): Promise<EngineStatus> {
    return this.starting ?? Promise.resolve(this.status)
  }

  /** The engine's `account/read` `requiresOpenaiAuth` since it last started, or null when unknown. */
  get requiresOpenaiAuth(): boolean | null {
    return this.requiresOpenaiAuthValue
  }

  /** One line for the start-up banner. */
  bannerLine(): string {
    if (this.runner === null) return this.options.settings.mode === 'off' ? 'engine: off' : `engine: none (${this.absentReason})`
    const version = this.runner.status.version
    return version === null ? 'engine: codex' : `engine: codex ${version}`
  }

  /** Starts the engine without waiting for it; the control connection follows readiness. */
  start(): void {
    const runner = this.runner
    if (runner === null) return
    if (this.unsubscribe.length === 0) {
      this.unsubscribe.push(
        runner.onReady((socketPath) => void this.engineReady(socketPath)),
        runner.onExit(() => this.engineExited()),
        this.options.accounts.onCredentialChange(() => this.scheduleHandOff()),
      )
    }
    this.stopping = false
    this.launch(runner, false)
  }

  /** Cancels a pending restart, then stops the engine (SIGTERM, then SIGKILL after the grace); resolves once it has exited. */
  async stop(): Promise<void> {
    this.stopping = true
    if (this.restartTimer !== null) this.options.clock.clearTimeout(this.restartTimer)
    this.restartTimer = null
    for (const off of this.unsubscribe.splice(0)) off()
    this.engineGone()
    await this.runner?.stop()
  }

  /**
   * Opens `client`'s upstream with its `initialize` params, unchanged; resolves with the
   * upstream and the engine's `initialize` result. Null when no engine runs; rejects with
   * `EngineUnavailableError` when the engine could not be reached or went away while this
   * start's credentials hand-off was still under way (which this waits for).
   */
  async openUpstream(client: UpstreamClient, initializeParams: unknown, log: AppLogger): Promise<{ upstream: EngineUpstream; result: unknown } | null> {
    if (this.runner === null || !this.running) return null
    await this.handedOff
    // No control connection: the credentials never reached this engine (it is being replaced).
    if (!this.running || this.control === null) throw new EngineUnavailableError('engine went away before it had the credentials')
    const upstream = new EngineUpstream({
      socketPath: this.runner.socketPath,
      client,
      serverRequestIds: this.options.serverRequestIds,
      onTokenRefresh: () => this.refreshTokens(),
      timers: this.options.clock,
      log,
    })
    const result = await upstream.open(initializeParams)
    return { upstream, result }
  }

  private launch(runner: EngineRunner, restarting: boolean): void {
    this.up = false
    this.starting = runner.start({ restarting }).then((status) => {
      // A start refused before any process existed (the socket directory) reports no exit.
      if (status.state === 'unavailable' && runner.pid == null && this.restartTimer === null && !this.stopping) {
        this.scheduleRestart(status.reason ?? 'engine not started')
      }
      return status
    })
  }

  private engineExited(): void {
    const wasUp = this.up
    const reason = this.killReason ?? this.runner?.status.reason ?? 'engine exited'
    this.up = false
    this.killReason = null
    this.engineGone()
    if (this.stopping || this.restartTimer !== null) return
    this.scheduleRestart(reason, wasUp)
  }

  private scheduleRestart(reason: string, wasUp = false): void {
    const runner = this.runner
    if (runner === null) return
    this.restartCount++
    const delayMs = this.backoff.nextDelayMs()
    this.downReason = reason
    this.waitState = wasUp ? 'restarting' : 'unavailable'
    this.log.warn({ event: 'engine.restart_scheduled', reason, attempt: this.backoff.attempt, delayMs }, `engine down (${reason}); restarting in ${delayMs} ms`)
    this.restartTimer = this.options.clock.setTimeout(() => {
      this.restartTimer = null
      if (!this.stopping) this.launch(runner, wasUp)
    }, delayMs)
  }

  /** The keepalive heard nothing back: the engine is killed and restarted like a crashed one. */
  private engineHung(silentMs: number): void {
    if (this.runner === null || this.stopping) return
    this.log.error({ event: 'engine.hung', silentMs }, `engine stopped answering (nothing back for ${Math.round(silentMs / 1000)} s); killing it`)
    this.killReason = HUNG_REASON
    this.runner.kill()
  }

  /** The answer to the engine's `account/chatgptAuthTokens/refresh`. */
  private async refreshTokens(): Promise<ChatgptAuthTokens> {
    try {
      return await this.options.accounts.recoverAfterUnauthorized()
    } catch (err) {
      this.log.warn({ event: 'engine.token_refresh_failed', error: withheldError(err) }, 'could not answer the engine with fresh tokens')
      throw new RpcError(INTERNAL_ERROR, REFRESH_FAILED)
    }
  }

  private async engineReady(socketPath: string): Promise<void> {
    this.up = true
    this.downReason = null
    this.backoff.up()
    // Set before anyone can see `running`: this listener runs in the same turn as the state change.
    this.handedOff = new Promise((resolve) => (this.settleHandedOff = resolve))
    const settle = this.settleHandedOff
    try {
      await this.openControl(socketPath)
    } finally {
      settle()
    }
    const control = this.control
    if (control === null) return
    try {
      const account = (await control.call('account/read', {}, CONTROL_CALL_TIMEOUT_MS)) as { requiresOpenaiAuth?: unknown } | null
      if (typeof account?.requiresOpenaiAuth === 'boolean') this.requiresOpenaiAuthValue = account.requiresOpenaiAuth
    } catch (err) {
      this.log.warn({ event: 'engine.account_read_failed', ...engineFailure(err) }, 'could not read the engine account state')
    }
  }

  /** Opens the control connection, hands the credentials off and starts the keepalive. */
  private async openControl(socketPath: string): Promise<void> {
    let control: EngineRpcClient
    try {
      control = await EngineRpcClient.connect(socketPath, { log: this.log, timers: this.options.clock })
      // The engine refuses the `chatgptAuthTokens` hand-off from a connection without `experimentalApi`.
      const params = { clientInfo: { name: GATEWAY_CLIENT_NAME, title: null, version: this.options.clientVersion }, capabilities: { experimentalApi: true } }
      await control.call('initialize', params, CONTROL_CALL_TIMEOUT_MS)
    } catch (err) {
      this.log.error({ event: 'engine.control_failed', error: withheldError(err) }, 'could not open the control connection to the engine')
      this.controlLost()
      return
    }
    if (!this.running) return control.close()
    control.notify('initialized')
    control.onRequest((method) => {
      if (method === TOKEN_REFRESH_METHOD) return this.refreshTokens()
      throw new RpcError(-32601, `method not found: ${method}`)
    })
    control.onClose(() => {
      if (this.control !== control) return
      this.control = null
      this.controlLost()
    })
    this.control = control
    this.scheduleHandOff()
    await this.handOffChain
    const keepAlive = this.options.keepAlive ?? {}
    control.keepAlive({
      ...keepAlive,
      onUnresponsive: (silentMs) => {
        if (this.control === control) this.engineHung(silentMs)
      },
    })
  }

  /**
   * Without its control connection an engine gets no credential hand-offs and no keepalive, so
   * one still running after the grace is killed and restarted like a hung one.
   */
  private controlLost(): void {
    if (this.stopping || this.controlLossTimer !== null) return
    this.controlLossTimer = this.options.clock.setTimeout(() => {
      this.controlLossTimer = null
      if (this.stopping || this.control !== null || !this.running || this.runner === null) return
      this.log.error({ event: 'engine.control_lost' }, 'no control connection to the running engine; killing it')
      this.killReason = CONTROL_LOST_REASON
      this.runner.kill()
    }, CONTROL_LOSS_GRACE_MS)
  }

  private engineGone(): void {
    if (this.controlLossTimer !== null) this.options.clock.clearTimeout(this.controlLossTimer)
    this.controlLossTimer = null
    this.requiresOpenaiAuthValue = null
    this.settleHandedOff()
    const control = this.control
    this.control = null
    control?.close()
  }

  /** Queues one hand-off of whatever credential is current when it runs. */
  private scheduleHandOff(): void {
    if (this.handOffQueued || this.control === null) return
    this.handOffQueued = true
    this.handOffChain = this.handOffChain.then(() => {
      this.handOffQueued = false
      return this.handOff()
    })
  }

  private async handOff(): Promise<void> {
    const control = this.control
    if (control === null) return
    const { method, params, kind } = this.handOffCall()
    try {
      await control.call(method, params, CONTROL_CALL_TIMEOUT_MS)
      this.log.info({ event: 'engine.credentials', kind }, 'credentials handed to the engine')
    } catch (err) {
      this.log.warn({ event: 'engine.credentials_failed', kind, ...engineFailure(err) }, 'could not hand the credentials to the engine')
    }
  }

  private handOffCall(): { method: string; params: unknown; kind: string } {
    const accounts = this.options.accounts
    const credential = accounts.current
    if (credential?.kind === 'apiKey') return { method: 'account/login/start', params: { type: 'apiKey', apiKey: credential.apiKey }, kind: 'apiKey' }
    const tokens = credential === null ? null : accounts.chatgptTokens()
    if (tokens !== null) return { method: 'account/login/start', params: { type: 'chatgptAuthTokens', ...tokens }, kind: 'chatgptAuthTokens' }
    // No credential, or a ChatGPT one without an account id (the engine needs one).
    return { method: 'account/logout', params: undefined, kind: credential === null ? 'none' : 'chatgptWithoutAccountId' }
  }
}

/** How an engine call failed, for the log: the engine's error code, or the error's type. */
function engineFailure(err: unknown): Record<string, unknown> {
  if (err instanceof EngineRpcError) return { code: err.body.code }
  if (err instanceof EngineUnavailableError) return { why: 'unavailable' }
  return { error: withheldError(err) }
}
