/**
 * The two backend calls that give this server its identity and its server token
 * (codex `server_api.rs`):
 *
 * - `enroll`:  `POST {base}/wham/remote/control/server/enroll`
 *   `{name, os, arch, app_server_version, installation_id}`
 * - `refresh`: `POST {base}/wham/remote/control/server/refresh` `{server_id, installation_id}`
 *
 * Both are made with the ChatGPT credential (`Authorization: Bearer`, `chatgpt-account-id`)
 * plus `x-codex-installation-id`, and both answer
 * `{server_id, environment_id, remote_control_token, expires_at}`.
 *
 * Failures are one of three kinds, and none of their messages ever contains the ChatGPT
 * token or the server token:
 * - `RemoteControlHttpError` (types.ts): a non-2xx answer; the controller acts on `status`.
 * - `RemoteControlNetworkError`: no (complete) answer; transient.
 * - `RemoteControlResponseError`: a 2xx answer that is not a usable grant, or a refresh for
 *   another server/environment than asked; not transient.
 */
import { arch as osArch, platform as osPlatform } from 'node:os'
import { Type, Compile, type Static } from '../util/typebox.js'
import { remoteControlUrls, type RemoteControlUrls } from './base-url.js'
import { describeHttpFailure, describeRequestIds, redactJson } from './preview.js'
import { RemoteControlHttpError, type ChatgptAuth, type ServerTokenGrant } from './types.js'
import { readBounded } from '../account/read-bounded.js'
import { isSendableHeaderValue } from '../util/header-value.js'
import { isJsonObject, tryParseJson } from '../util/json.js'
import { fetchErrorCode, networkErrorText } from '../util/network-error.js'
import { rustArch, rustOs } from '../util/rust-platform.js'

/** Codex's `REMOTE_CONTROL_ENROLL_TIMEOUT`: the whole request, body included. */
export const ENROLLMENT_TIMEOUT_MS = 30_000
// A grant is a few hundred bytes; error bodies are read whole (up to this) so the preview can
// parse and redact them before cutting.
const MAX_BODY_BYTES = 1024 * 1024

export interface EnrollmentClientOptions {
  /** `{CHATGPT_BASE_URL}`, e.g. `https://chatgpt.com/backend-api`; checked by `remoteControlUrls`. */
  readonly baseUrl: string
  /** Defaults to the global (undici) fetch. */
  readonly fetch?: typeof fetch
  readonly timeoutMs?: number
}

export interface EnrollRequest {
  /** The server name shown to remote clients (codex: the hostname). */
  readonly name: string
  /** Codex's values: `std::env::consts::OS` / `ARCH` (see `hostPlatform`). */
  readonly os: string
  readonly arch: string
  readonly appServerVersion: string
  readonly installationId: string
}

/**
 * The enrollment being refreshed. `environmentId` is not sent: it is what the answer must
 * carry, so a refresh answered for another server or environment is an error here (checked
 * in the client rather than the cache because only the client knows it was a refresh).
 */
export interface RefreshRequest {
  readonly serverId: string
  readonly environmentId: string
  readonly installationId: string
}

/** The backend could not be reached, or did not answer in time. Always worth a retry later. */
export class RemoteControlNetworkError extends Error {
  override name = 'RemoteControlNetworkError'
  readonly transient = true
  constructor(
    message: string,
    readonly timedOut: boolean,
  ) {
    super(message)
  }
}

/** A 2xx answer that is not a usable grant (or not for the enrollment refreshed). */
export class RemoteControlResponseError extends Error {
  override name = 'RemoteControlResponseError'
}

/**
 * Whether a failed enroll/refresh should be retried after a deferral rather than acted on:
 * no answer or a timeout, 429, or 5xx (codex `is_transient`).
 */
export function isTransientRemoteControlError(err: unknown): boolean {
  if (err instanceof RemoteControlNetworkError) return true
  if (err instanceof RemoteControlHttpError) return err.status === 429 || (err.status >= 500 && err.status <= 599)
  return false
}

/** `os` and `arch` as codex (Rust's `std::env::consts`) reports them to the backend. */
export function hostPlatform(): { os: string; arch: string } {
  return { os: rustOs(osPlatform()), arch: rustArch(osArch()) }
}

export class EnrollmentClient {
  readonly urls: RemoteControlUrls
  private readonly fetchImpl: typeof fetch
  private readonly timeoutMs: number

  /** Throws `invalid remote control URL ...` for a base outside the allow-list. */
  constructor(options: EnrollmentClientOptions) {
    this.urls = remoteControlUrls(options.baseUrl)
    this.fetchImpl = options.fetch ?? globalThis.fetch
    this.timeoutMs = options.timeoutMs ?? ENROLLMENT_TIMEOUT_MS
  }

  /** Registers this server with the backend: a new server id, environment id and server token. */
  async enroll(auth: ChatgptAuth, request: EnrollRequest): Promise<ServerTokenGrant> {
    const body = {
      name: request.name,
      os: request.os,
      arch: request.arch,
      app_server_version: request.appServerVersion,
      installation_id: request.installationId,
    }
    return this.post(this.urls.enrollUrl, 'enroll', auth, request.installationId, body)
  }

  /** A new server token for an existing enrollment; the answer must name the same server and environment. */
  async refresh(auth: ChatgptAuth, request: RefreshRequest): Promise<ServerTokenGrant> {
    const body = { server_id: request.serverId, installation_id: request.installationId }
    const grant = await this.post(this.urls.refreshUrl, 'refresh', auth, request.installationId, body)
    if (grant.serverId !== request.serverId || grant.environmentId !== request.environmentId) {
      throw new RemoteControlResponseError(
        `remote control server refresh returned mismatched enrollment: expected server_id=${quote(request.serverId)}, environment_id=${quote(request.environmentId)}; got server_id=${quote(grant.serverId)}, environment_id=${quote(grant.environmentId)}`,
      )
    }
    return grant
  }

  private async post(url: string, action: 'enroll' | 'refresh', auth: ChatgptAuth, installationId: string, body: object): Promise<ServerTokenGrant> {
    // Codex's wording: "remote control server enrollment failed at `URL`: HTTP 401 ...".
    const what = action === 'enroll' ? 'server enrollment' : 'server refresh'
    // Checked here because fetch's own complaint about a bad header value quotes the value.
    for (const [name, value] of [
      ['ChatGPT access token', auth.accessToken],
      ['ChatGPT account id', auth.accountId],
      ['installation id', installationId],
    ] as const) {
      if (!isTokenHeaderValue(value)) throw new Error(`remote control ${what} not sent: the ${name} is not a valid HTTP header value`)
    }

    const signal = AbortSignal.timeout(this.timeoutMs)
    let response: Response
    try {
      response = await this.fetchImpl(url, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${auth.accessToken}`,
          'chatgpt-account-id': auth.accountId,
          'x-codex-installation-id': installationId,
          'content-type': 'application/json',
          accept: 'application/json',
        },
        body: JSON.stringify(body),
        signal,
        // Following a redirect would hand the ChatGPT token to wherever it points.
        redirect: 'manual',
      })
    } catch (err) {
      throw networkError(`failed to ${action} remote control server at \`${url}\``, err, this.timeoutMs)
    }

    const read = await readBounded(response, MAX_BODY_BYTES, signal)
    if (response.status < 200 || response.status > 299) {
      // The status is what the caller acts on, so a body cut short by a timeout still yields
      // the HTTP error (with what was read), not a network error.
      // Kept for `{"detail": ...}` checks, without the fields that must never be logged.
      const json = redactJson(parseJson(read.bytes))
      throw new RemoteControlHttpError(
        response.status,
        `remote control ${what} failed at \`${url}\`: ${describeHttpFailure(response.status, response.headers, read.bytes)}`,
        response.headers.get('retry-after'),
        json,
      )
    }
    if (read.error !== null) throw networkError(`failed to read remote control ${what} response from \`${url}\``, read.error, this.timeoutMs)

    // No body preview from here on: a 2xx body is the grant itself, and a malformed one may
    // hold the token where the preview's redaction cannot see it.
    const where = `remote control ${what} response from \`${url}\` (HTTP ${response.status}, ${describeRequestIds(response.headers)})`
    if (read.truncated) throw new RemoteControlResponseError(`${where} is larger than ${MAX_BODY_BYTES} bytes`)
    const json = parseJson(read.bytes)
    if (!isJsonObject(json)) throw new RemoteControlResponseError(`${where} is not a JSON object`)
    return parseGrant(json, where)
  }
}

/** The answer to enroll and refresh; other fields are ignored. */
const GrantBodySchema = Type.Object({
  server_id: Type.String({ minLength: 1 }),
  environment_id: Type.String({ minLength: 1 }),
  remote_control_token: Type.String({ minLength: 1 }),
  expires_at: Type.String({ minLength: 1 }),
})
type GrantBody = Static<typeof GrantBodySchema>
const grantBody = Compile(GrantBodySchema)
// One validator per field, so a malformed grant names every field that is wrong.
const grantFields = Object.entries(GrantBodySchema.properties).map(([name, schema]) => ({ name, validator: Compile(schema) }))

/**
 * The grant's fields, checked without ever quoting the token: first their shape, then what a
 * schema cannot say (a token usable as a header value, a real RFC 3339 instant).
 */
function parseGrant(json: Record<string, unknown>, where: string): ServerTokenGrant {
  const problems: string[] = []
  for (const { name, validator } of grantFields) {
    const v = json[name]
    if (!validator.Check(v)) problems.push(v === undefined || v === null ? `missing ${name}` : `invalid ${name} (expected a non-empty string)`)
  }
  const token = json.remote_control_token
  // It goes into the websocket's Authorization header later; a bad value would fail there
  // with a message that quotes it.
  if (typeof token === 'string' && token !== '' && !isSendableHeaderValue(token)) problems.push('invalid remote_control_token (not a valid HTTP header value)')
  const expires = json.expires_at
  const expiresAt = typeof expires === 'string' && expires !== '' ? parseRfc3339(expires) : null
  if (typeof expires === 'string' && expires !== '' && expiresAt === null) problems.push('invalid expires_at (expected an RFC 3339 timestamp)')
  if (problems.length > 0 || expiresAt === null || !grantBody.Check(json)) {
    throw new RemoteControlResponseError(`${where} is not a server token grant: ${problems.join(', ')}`)
  }
  const body: GrantBody = json
  return { serverId: body.server_id, environmentId: body.environment_id, remoteControlToken: body.remote_control_token, expiresAt }
}

/**
 * RFC 3339 date-time (`2025-01-02T03:04:05.678Z`, `...+02:00`), strictly: Date.parse alone
 * accepts many other shapes and rolls over impossible dates.
 */
export function parseRfc3339(text: string): Date | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/.exec(text)
  if (m === null) return null
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number]
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return null
  const utc = Date.UTC(year, month - 1, day, hour, minute, second)
  const check = new Date(utc)
  if (check.getUTCDate() !== day || check.getUTCMonth() !== month - 1) return null
  const ms = m[7] === undefined ? 0 : Math.floor(Number(`0${m[7]}`) * 1000)
  let offset = 0
  if (m[8] === undefined) {
    const oh = Number(m[10])
    const om = Number(m[11])
    if (oh > 23 || om > 59) return null
    offset = (m[9] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000
  }
  return new Date(utc + ms - offset)
}

/** The body's JSON value, or null when it is none. */
function parseJson(bytes: Buffer): unknown {
  return tryParseJson(bytes.toString('utf8')) ?? null
}

/**
 * Built from the error's name and code only: an unknown error's message may quote the
 * request (headers included).
 */
function networkError(prefix: string, err: unknown, timeoutMs: number): RemoteControlNetworkError {
  const e = err as { name?: unknown } | null
  if (e?.name === 'TimeoutError') return new RemoteControlNetworkError(`${prefix}: timed out after ${timeoutMs} ms`, true)
  if (e?.name === 'AbortError') return new RemoteControlNetworkError(`${prefix}: aborted`, false)
  const code = fetchErrorCode(err)
  const timedOut = code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
  return new RemoteControlNetworkError(`${prefix}: ${networkErrorText(code)}`, timedOut)
}

/** Sendable and not empty: what a credential or id header must be. */
function isTokenHeaderValue(value: string): boolean {
  return value !== '' && isSendableHeaderValue(value)
}

/** An id from the backend in a message: quoted, printable, short. */
function quote(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, '?')
  return JSON.stringify(printable.length > 200 ? `${printable.slice(0, 200)}...` : printable)
}
