import { STATUS_CODES } from 'node:http'
import { arch, release, type as osType } from 'node:os'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import websocket from '@fastify/websocket'
import type { Logger } from 'pino'
import account, { type AccountPluginOptions } from '../plugins/account.js'
import browserGuard from '../plugins/browser-guard.js'
import configPlugin from '../plugins/config.js'
import dispatcher, { type DispatcherPluginOptions } from '../plugins/dispatcher.js'
import engine, { type EnginePluginOptions } from '../plugins/engine.js'
import lifecycle from '../plugins/lifecycle.js'
import metrics from '../plugins/metrics.js'
import rateLimits from '../plugins/rate-limit.js'
import remoteControl, { type RemoteControlPluginOptions } from '../plugins/remote-control.js'
import requestShape from '../plugins/request-shape.js'
import sessions from '../plugins/sessions.js'
import socketGuard from '../plugins/socket-guard.js'
import type { Clock } from './clock.js'
import wsAuth from '../plugins/ws-auth.js'
import healthRoutes from '../routes/health.js'
import metricsRoutes from '../routes/metrics.js'
import websocketRoutes from '../routes/websocket.js'
import { MAX_HEADER_FIELDS } from './auth/request-shape.js'
import type { Config } from './config/types.js'
import type { ServerInfo } from './rpc/methods/initialize.js'
import { SHUTTING_DOWN_MESSAGE, SHUTTING_DOWN_UNANSWERED } from './rpc/errors.js'
import { UserAgent } from './rpc/user-agent.js'
import { closeWebSockets } from './rpc/websocket-transport.js'
import { VERSION } from './version.js'

export interface BuildOptions {
  readonly logger: Logger
  /** Fixed query token (tests, benchmarks); otherwise generated. */
  readonly queryToken?: string
  /** Clock for JWT checks, in ms. */
  readonly now?: () => number
  /** `$TERM` of the process, for the user agent. */
  readonly terminal?: string
  /** Extra JSON-RPC methods (tests register probes). */
  readonly extraMethods?: DispatcherPluginOptions['extraMethods']
  /** Timers for server requests and rate limits (tests drive time). */
  readonly timers?: Clock
  /** Check every JSON-RPC result against its method's schema (tests). */
  readonly validateResults?: boolean
  /** Test stand-ins for the OS keyring and outbound HTTP. */
  readonly account?: AccountPluginOptions
  /** Test clock and server name for remote control. */
  readonly remoteControl?: RemoteControlPluginOptions
  /** Tests: an engine already listening instead of the one the config resolves. */
  readonly engine?: EnginePluginOptions
  /** Tests: how long client frames may run per turn of the event loop (see src/rpc/turn-budget.ts). */
  readonly turnBudgetMs?: number
}

const PLAIN_TEXT = 'text/plain; charset=utf-8'

/**
 * Builds the Fastify app from a config. The CLI and the tests both start here. Plugins are
 * registered in the order data flows: the app's settings and HTTP guards, then what sessions
 * share, then the services (account, engine, remote control), then the dispatcher built from them,
 * then the routes.
 */
export async function buildApp(config: Config, options: BuildOptions): Promise<FastifyInstance> {
  // Typed as Fastify's logger interface, so the app is the `FastifyInstance` plugins are written for.
  const loggerInstance: FastifyBaseLogger = options.logger
  const headerTimeoutMs = config.limits.headerTimeoutMs
  const app = Fastify({
    loggerInstance,
    logController: new ProbeQuietLogController(),
    // An upgrade endpoint's requests are headers only: a socket that has not sent them in time
    // is closed (Node's defaults hold it 60-90 s), checked often enough for the bound to mean it.
    requestTimeout: headerTimeoutMs,
    keepAliveTimeout: 5_000,
    http: { headersTimeout: headerTimeoutMs, connectionsCheckingInterval: Math.min(1_000, Math.max(50, Math.floor(headerTimeoutMs / 2))) },
    frameworkErrors: answerBadUrl,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // `request.ip` — what limits, throttle keys and logs use — comes from X-Forwarded-For only
    // through the proxies the operator named; by default the header is ignored.
    trustProxy: fastifyTrustProxy(config.trustProxy),
  })
  // Node drops the header fields past this count without a word; the request-shape check
  // refuses a request that reaches it (431) instead of letting the dropped ones go unseen.
  app.server.maxHeadersCount = MAX_HEADER_FIELDS

  await app.register(configPlugin, { config })
  await app.register(lifecycle)
  await app.register(metrics)
  await app.register(wsAuth, { ...(options.queryToken ? { queryToken: options.queryToken } : {}), ...(options.now ? { now: options.now } : {}) })
  await app.register(websocket, {
    // No subprotocol is ever selected: codex offers none, and ws would echo the first one
    // offered into the 101 — some clients put a token there.
    options: { maxPayload: config.maxPayloadBytes, handleProtocols: () => false },
    preClose: async function closeWebSocketServer() {
      await closeWebSockets(app.websocketServer)
    },
  })
  await app.register(socketGuard)
  await app.register(requestShape)
  await app.register(browserGuard)
  await app.register(rateLimits, options.now ? { now: options.now } : {})
  await app.register(sessions, { ...(options.timers ? { timers: options.timers } : {}), ...(options.turnBudgetMs !== undefined ? { turnBudgetMs: options.turnBudgetMs } : {}) })
  await app.register(account, options.account ?? {})
  await app.register(engine, { ...(options.timers ? { clock: options.timers } : {}), ...options.engine })
  await app.register(remoteControl, options.remoteControl ?? {})
  await app.register(dispatcher, {
    serverInfo: serverInfo(config, options.terminal),
    validateResults: options.validateResults ?? false,
    ...(options.extraMethods ? { extraMethods: options.extraMethods } : {}),
  })

  // Neither handler quotes the request: its URL may carry the connection token.
  app.setNotFoundHandler((_request, reply) => reply.code(404).type(PLAIN_TEXT).send('not found'))
  app.setErrorHandler((error: { statusCode?: number }, request, reply) => {
    const status = typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
    if (status === 500) request.log.error({ err: error }, 'request failed')
    return reply.code(status).type(PLAIN_TEXT).send((STATUS_CODES[status] ?? 'error').toLowerCase())
  })

  await app.register(healthRoutes)
  await app.register(metricsRoutes)
  await app.register(websocketRoutes)
  return app
}

const PROBE_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/readyz'])

/**
 * Fastify's request lines, except for probes: an orchestrator polls them every few seconds,
 * so instead of two INFO lines each they get one DEBUG line when answered (errors still log).
 */
class ProbeQuietLogController extends LogController {
  override incomingRequest(request: FastifyRequest, reply: FastifyReply, metadata?: Record<string, unknown>): void {
    if (!isProbe(request)) super.incomingRequest(request, reply, metadata)
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply, metadata?: Record<string, unknown>): void {
    if (error || !isProbe(request)) return super.requestCompleted(error, request, reply, metadata)
    reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'probe answered')
  }
}

function isProbe(request: FastifyRequest): boolean {
  return PROBE_ROUTES.has(request.routeOptions.url ?? '')
}

/**
 * Some bad URLs make Fastify quote the URL in its error body; answer without it. No route
 * hook runs on this path, so an upgrade attempt is logged and its socket ended here.
 */
function answerBadUrl(_error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  if (request.headers.upgrade !== undefined) {
    request.server.upgradeAudit.rejected(request.log, 'bad request url', request.ip)
    reply.header('connection', 'close')
    reply.raw.once('finish', () => request.raw.socket.destroy())
  }
  void reply.code(400).type(PLAIN_TEXT).send('bad request')
}

/**
 * A hop count becomes a function (this Fastify trusts no hop for a bare number): the nearest
 * `hops` addresses of the chain are proxies, the socket's peer first — so with a count the
 * listener must be reachable only through the proxy.
 */
function fastifyTrustProxy(trust: Config['trustProxy']): boolean | string[] | ((address: string, hop: number) => boolean) {
  if (typeof trust === 'number') return (_address, hop) => hop < trust
  return typeof trust === 'boolean' ? trust : [...trust]
}

/** What `initialize` reports about this host. */
function serverInfo(config: Config, terminal: string | undefined): ServerInfo {
  return {
    home: config.home,
    userAgent: new UserAgent({
      version: VERSION,
      osType: osType(),
      osRelease: release(),
      arch: arch(),
      terminal: terminal && terminal.length > 0 ? terminal : 'unknown',
    }),
    platformFamily: process.platform === 'win32' ? 'windows' : 'unix',
    platformOs: process.platform === 'darwin' ? 'macos' : process.platform === 'win32' ? 'windows' : process.platform,
  }
}

/**
 * What a stop may take after the drain's deadline: close handshakes (a peer that does not
 * finish one is dropped after `CLOSE_HANDSHAKE_GRACE_MS`) and the engine's exit (SIGTERM,
 * SIGKILL after 5 s), with room to spare. The CLI's last-resort timer is the drain deadline
 * plus this, so it never cuts a drain short.
 */
export const AFTER_DRAIN_MS = 15_000

/**
 * Graceful stop, and the only place sessions are drained: `/readyz` turns 503 and new
 * upgrades get 503; new requests are refused (-32001); every session answers what it has in
 * flight and is closed with 1001 — at `--shutdown-timeout-seconds`, what is still in flight is
 * answered -32603 `server shutting down` first — then the app closes (and with it the engine:
 * SIGTERM, SIGKILL after 5 s). Draining comes before `app.close()` because once Fastify is
 * closing it answers every HTTP request itself (a bare 503), probes included.
 */
export async function drainAndClose(app: FastifyInstance): Promise<void> {
  app.lifecycle.beginDrain()
  await app.sessions.closeAll(1001, SHUTTING_DOWN_MESSAGE, { ms: app.config.shutdownTimeoutMs, clock: app.sessionFactory.clock, unanswered: SHUTTING_DOWN_UNANSWERED })
  await app.close()
}
