/**
 * The local OAuth callback server of the ChatGPT browser login, on plain node:http: it must
 * run without the app server (the CLI login) and serves only a handful of fixed pages.
 *
 * It answers one login: the first callback that ends the flow (a code, a denial, a missing
 * code) or `/cancel` is reported once, answered, and the server then closes itself, as codex's
 * does. A callback without the login's state is answered 400 and changes nothing, as in codex:
 * any local process can reach this port, and none may end someone's login by guessing wrong.
 * It never logs: the query holds the code and the state.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { systemClock } from '../clock.js'
import { flagDefault } from '../config/flags.js'

/** Codex's registered redirect port (`--login-callback-port`'s default). */
export const DEFAULT_LOGIN_PORT = flagDefault('loginCallbackPort')
/** Codex's second registered redirect port, tried when the default one stays busy. */
export const FALLBACK_LOGIN_PORT = 1457
export const CALLBACK_PATH = '/auth/callback'

export type CallbackFailureReason = 'denied' | 'oauth_error' | 'missing_code' | 'cancelled'

export interface CallbackFailure {
  readonly reason: CallbackFailureReason
  /** Plain words for the user; never a code or the state. */
  readonly message: string
}

/** What the login made of a code: the browser is shown a success or an error page. */
export type CodeResult = { readonly ok: true } | { readonly ok: false; readonly message: string }

export interface BindRetry {
  /** Binds tried on one port before giving up on it (codex: 10). */
  readonly attempts: number
  /** Pause between them (codex: 200 ms). */
  readonly delayMs: number
}

export interface LoginServerOptions {
  /** Default `DEFAULT_LOGIN_PORT`; 0 takes any free port (tests). */
  readonly port?: number
  /** Tried when `port` stays busy. Default `FALLBACK_LOGIN_PORT` for the default port, none otherwise; null for none. */
  readonly fallbackPort?: number | null
  readonly host?: string
  readonly state: string
  /** Exchanges the code; the page the browser gets waits for it. */
  readonly onCode: (code: string) => Promise<CodeResult>
  readonly onFailure: (failure: CallbackFailure) => void
  readonly bindRetry?: BindRetry
  /** How long the `/cancel` sent to a busy port may take (codex: 2 s). */
  readonly cancelTimeoutMs?: number
}

export interface LoginServer {
  readonly port: number
  /** `http://localhost:PORT/auth/callback`: `localhost`, as registered with the auth server. */
  readonly redirectUri: string
  /** Resolves once the server has stopped and its sockets are gone. */
  readonly closed: Promise<void>
  /** Stops now, cutting any request in flight. */
  close(): Promise<void>
}

/** The port could not be bound. */
export class LoginServerError extends Error {
  override name = 'LoginServerError'
}

const CODEX_BIND_RETRY: BindRetry = { attempts: 10, delayMs: 200 }
/** A graceful close gives lingering sockets this long before cutting them. */
const CLOSE_GRACE_MS = 1000

export async function startLoginServer(options: LoginServerOptions): Promise<LoginServer> {
  const host = options.host ?? '127.0.0.1'
  const port = options.port ?? DEFAULT_LOGIN_PORT
  const fallback = options.fallbackPort === undefined ? (port === DEFAULT_LOGIN_PORT ? FALLBACK_LOGIN_PORT : null) : options.fallbackPort
  const callbacks = new CallbackHandler(options)
  const server = await bindWithFallback(
    () => createServer((req, res) => callbacks.handle(req, res)),
    host,
    port,
    fallback,
    options.bindRetry ?? CODEX_BIND_RETRY,
    options.cancelTimeoutMs ?? 2000,
  )
  const actualPort = (server.address() as AddressInfo).port
  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()))
  let closing = false
  const stop = (force: boolean): Promise<void> => {
    if (!closing) {
      closing = true
      server.close()
      if (force) server.closeAllConnections()
      else {
        server.closeIdleConnections()
        systemClock.setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS)
      }
    }
    return closed
  }
  callbacks.onTerminalResponseSent = () => void stop(false)
  return {
    port: actualPort,
    redirectUri: `http://localhost:${actualPort}${CALLBACK_PATH}`,
    closed,
    close: () => stop(true),
  }
}

/** Routes requests; knows the state and whether the login already ended. */
class CallbackHandler {
  private ended = false
  onTerminalResponseSent: () => void = () => {}

  constructor(private readonly options: LoginServerOptions) {}

  handle(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('Cache-Control', 'no-store')
    // The callback URL holds the code: nothing this page loads may be told where it came from.
    res.setHeader('Referrer-Policy', 'no-referrer')
    res.setHeader('X-Content-Type-Options', 'nosniff')
    if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, 'Method Not Allowed')
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://localhost')
    } catch {
      return plain(res, 400, 'Bad Request')
    }
    switch (url.pathname) {
      case CALLBACK_PATH:
        return void this.callback(url.searchParams, res)
      case '/cancel':
        // Codex's: a newer login server that finds this port busy asks this one to step aside.
        if (!this.end(res)) return plain(res, 410, 'Login is no longer in progress')
        plain(res, 200, 'Login cancelled')
        return this.options.onFailure({ reason: 'cancelled', message: 'Login cancelled' })
      default:
        return plain(res, 404, 'Not Found')
    }
  }

  private async callback(params: URLSearchParams, res: ServerResponse): Promise<void> {
    if (this.ended) return plain(res, 410, 'Login is no longer in progress')
    // Checked first, so a stray request cannot end the login with an `error=` either.
    if (!sameState(params.get('state'), this.options.state)) return plain(res, 400, 'State mismatch')
    const error = params.get('error')
    if (error) {
      this.end(res)
      const message = oauthErrorMessage(error, params.get('error_description'))
      html(res, 200, errorPage(message))
      return this.options.onFailure({ reason: error === 'access_denied' ? 'denied' : 'oauth_error', message })
    }
    const code = params.get('code')
    if (!code) {
      this.end(res)
      const message = 'Missing authorization code. Sign-in could not be completed.'
      html(res, 400, errorPage(message))
      return this.options.onFailure({ reason: 'missing_code', message })
    }
    this.end(res)
    let result: CodeResult
    try {
      result = await this.options.onCode(code)
    } catch {
      result = { ok: false, message: 'Sign-in could not be completed.' }
    }
    if (res.destroyed || res.writableEnded) return
    if (result.ok) html(res, 200, SUCCESS_PAGE)
    else html(res, 200, errorPage(result.message))
  }

  /** Marks the login ended and arranges the server's close after this response; false if it had. */
  private end(res: ServerResponse): boolean {
    if (this.ended) return false
    this.ended = true
    res.setHeader('Connection', 'close')
    res.once('close', () => this.onTerminalResponseSent())
    return true
  }
}

/** Constant-time, so the state cannot be probed byte by byte. */
function sameState(received: string | null, expected: string): boolean {
  if (received === null) return false
  const a = Buffer.from(received)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** Codex's wording for an `error=` callback. The description is the auth server's text. */
function oauthErrorMessage(error: string, description: string | null): string {
  const desc = description === null ? '' : printable(description)
  if (error === 'access_denied' && desc.toLowerCase().includes('missing_codex_entitlement')) {
    return 'Codex is not enabled for your workspace. Contact your workspace administrator to request access to Codex.'
  }
  return desc !== '' ? `Sign-in failed: ${desc}` : `Sign-in failed: ${printable(error)}`
}

function printable(text: string): string {
  const out = text.replace(/[^\x20-\x7e]+/g, ' ').trim()
  return out.length > 200 ? `${out.slice(0, 200)}…` : out
}

function plain(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) })
  res.end(body)
}

function html(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'",
  })
  res.end(body)
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}</style>
</head><body>${body}</body></html>
`
}

const SUCCESS_PAGE = page(
  'Signed in',
  '<h1>Signed in</h1><p>You are signed in with ChatGPT. You can close this tab and return to your app.</p>',
)

function errorPage(message: string): string {
  return page(
    'Sign-in could not be completed',
    `<h1>Sign-in could not be completed</h1><p>${escapeHtml(message)}</p><p>Return to your app to try again.</p>`,
  )
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/**
 * Binds `port`; while it is busy, asks whoever holds it to cancel (once: it may be an earlier
 * login server of ours) and retries, then moves to the fallback port, as codex does.
 */
async function bindWithFallback(
  make: () => Server,
  host: string,
  port: number,
  fallback: number | null,
  retry: BindRetry,
  cancelTimeoutMs: number,
): Promise<Server> {
  let cancelSent = false
  const candidates = fallback === null || fallback === port || port === 0 ? [port] : [port, fallback]
  for (const [index, candidate] of candidates.entries()) {
    for (let attempt = 1; ; attempt++) {
      const server = make()
      const error = await listen(server, host, candidate)
      if (error === null) return server
      if (error.code !== 'EADDRINUSE') throw new LoginServerError(`Could not start the login server on ${host}:${candidate} (${error.code ?? 'error'})`)
      if (index === 0 && !cancelSent) {
        cancelSent = true
        await sendCancel(host, candidate, cancelTimeoutMs)
      }
      if (attempt >= retry.attempts) break
      await sleep(retry.delayMs)
    }
  }
  const last = candidates[candidates.length - 1]
  throw new LoginServerError(`Port ${host}:${last} is already in use`)
}

function listen(server: Server, host: string, port: number): Promise<NodeJS.ErrnoException | null> {
  return new Promise((resolve) => {
    const onError = (err: NodeJS.ErrnoException) => resolve(err)
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve(null)
    })
  })
}

/** `GET /cancel` to whatever holds the port; failures are ignored (it may not be ours). */
function sendCancel(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const req = httpRequest({ host, port, path: '/cancel', method: 'GET', headers: { Connection: 'close' }, timeout: timeoutMs }, (res) => {
      res.resume()
      res.once('end', () => resolve())
      res.once('error', () => resolve())
    })
    req.once('timeout', () => req.destroy())
    req.once('error', () => resolve())
    req.once('close', () => resolve())
    req.end()
  })
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => systemClock.setTimeout(resolve, ms))
}
