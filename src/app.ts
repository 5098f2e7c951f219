import { STATUS_CODES } from 'node:http'
import { arch, release, type as osType } from 'node:os'
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import websocket from '@fastify/websocket'
import type { Logger } from 'pino'
import browserGuard from '../plugins/browser-guard.js'
import configPlugin from '../plugins/config.js'
import lifecycle from '../plugins/lifecycle.js'
import rpc, { type RpcPluginOptions } from '../plugins/rpc.js'
import rateLimits from '../plugins/rate-limit.js'
import account, { type AccountPluginOptions } from '../plugins/account.js'
import remoteControl, { type RemoteControlPluginOptions } from '../plugins/remote-control.js'
import type { Clock } from './clock.js'
import wsAuth from '../plugins/ws-auth.js'
import healthRoutes from '../routes/health.js'
import websocketRoutes from '../routes/websocket.js'
import type { Config } from './config/types.js'
import { UserAgent } from './rpc/user-agent.js'
import type { AppServices } from './services.js'
import { VERSION } from './version.js'
import { logUpgradeRejected } from './auth/audit.js'

export interface BuildOptions {
  readonly logger: Logger
  /** Fixed query token (tests, benchmarks); otherwise generated. */
  readonly queryToken?: string
  /** Clock for JWT checks, in ms. */
  readonly now?: () => number
  /** `$TERM` of the process, for the user agent. */
  readonly terminal?: string
  /** Extra JSON-RPC methods (tests register probes). */
  readonly extraMethods?: RpcPluginOptions['extraMethods']
  /** Timers for server requests and rate limits (tests drive time). */
  readonly timers?: Clock
  /** Check every JSON-RPC result against its method's schema (tests). */
  readonly validateResults?: boolean
  /** Test stand-ins for the OS keyring and outbound HTTP. */
  readonly account?: AccountPluginOptions
  /** Test clock and server name for remote control. */
  readonly remoteControl?: RemoteControlPluginOptions
}

const PLAIN_TEXT = 'text/plain; charset=utf-8'

/** Builds the Fastify app from a config. The CLI and the tests both start here. */
export async function buildApp(config: Config, options: BuildOptions): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: options.logger,
    // Some bad URLs make Fastify quote the URL in its error body; answer without it. No route
    // hook runs on this path, so an upgrade attempt is logged and its socket ended here.
    frameworkErrors: (_error, request, reply) => {
      const r = reply as unknown as FastifyReply
      if (request.headers.upgrade !== undefined) {
        logUpgradeRejected(request.log, config.auth.mode, 'bad request url', request.ip)
        r.header('connection', 'close')
        r.raw.once('finish', () => request.raw.socket.destroy())
      }
      void r.code(400).type(PLAIN_TEXT).send('bad request')
    },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  }) as unknown as FastifyInstance

  const services: AppServices = {
    serverInfo: {
      home: config.home,
      userAgent: new UserAgent({
        version: VERSION,
        osType: osType(),
        osRelease: release(),
        arch: arch(),
        terminal: options.terminal && options.terminal.length > 0 ? options.terminal : 'unknown',
      }),
      platformFamily: process.platform === 'win32' ? 'windows' : 'unix',
      platformOs: process.platform === 'darwin' ? 'macos' : process.platform === 'win32' ? 'windows' : process.platform,
    },
    // Read at call time: the account plugin is registered after the dispatcher it serves.
    get accounts() {
      return app.accounts
    },
    get rateLimits() {
      return app.rateLimitsReader
    },
    get remoteControl() {
      return app.remoteControl
    },
  }

  await app.register(configPlugin, { config })
  await app.register(lifecycle)
  await app.register(wsAuth, { ...(options.queryToken ? { queryToken: options.queryToken } : {}), ...(options.now ? { now: options.now } : {}) })
  await app.register(websocket, {
    options: { maxPayload: config.maxPayloadBytes },
    preClose: async function closeSockets() {
      await app.sessions.closeAll(1001, 'server shutting down')
      await new Promise<void>((resolve) => app.websocketServer.close(() => resolve()))
    },
  })
  await app.register(browserGuard)
  await app.register(rpc, {
    services,
    validateResults: options.validateResults ?? false,
    ...(options.extraMethods ? { extraMethods: options.extraMethods } : {}),
    ...(options.timers ? { timers: options.timers } : {}),
  })
  await app.register(rateLimits, options.now ? { now: options.now } : {})
  await app.register(account, options.account ?? {})
  await app.register(remoteControl, options.remoteControl ?? {})

  // Neither handler quotes the request: its URL may carry the connection token.
  app.setNotFoundHandler((_request, reply) => reply.code(404).type(PLAIN_TEXT).send('not found'))
  app.setErrorHandler((error: { statusCode?: number }, request, reply) => {
    const status = typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
    if (status === 500) request.log.error({ err: error }, 'request failed')
    return reply.code(status).type(PLAIN_TEXT).send((STATUS_CODES[status] ?? 'error').toLowerCase())
  })

  await app.register(healthRoutes)
  await app.register(websocketRoutes)
  return app
}

/**
 * Graceful stop: `/readyz` turns 503 and new upgrades get 503, every session answers what it
 * has in flight and is closed with 1001, then the listener closes.
 */
export async function drainAndClose(app: FastifyInstance): Promise<void> {
  app.lifecycle.beginDrain()
  await app.sessions.closeAll(1001, 'server shutting down')
  await app.close()
}
