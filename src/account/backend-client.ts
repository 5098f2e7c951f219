/**
 * The ChatGPT backend as codex's backend client calls it: for now only the usage endpoint
 * behind `account/rateLimits/read`. Every failure is one of three errors (HTTP status,
 * payload, network) whose messages are safe to show: they never contain the access token,
 * even when the backend echoes it back in an error body.
 */
import { usagePayloadProblem, type UsagePayload } from './usage.js'
import { readBounded } from './read-bounded.js'
import { oneLinePreview } from '../util/body-preview.js'
import { isSendableHeaderValue } from '../util/header-value.js'
import { tryParseJson } from '../util/json.js'
import { fetchErrorCode, networkErrorText } from '../util/network-error.js'
import { REDACTED } from '../util/redaction-markers.js'
import { requestIdOf } from '../util/response-headers.js'

export interface BackendClientOptions {
  /** e.g. `https://chatgpt.com/backend-api`; http(s) only, no credentials, query or fragment. */
  readonly baseUrl: string
  readonly userAgent: string
  /** Defaults to the global (undici) fetch; tests may pass their own. */
  readonly fetch?: typeof fetch
  /** Whole request, body included. */
  readonly timeoutMs?: number
}

export interface UsageRequest {
  readonly accessToken: string
  /** Sent as `ChatGPT-Account-Id` when not null. */
  readonly accountId: string | null
}

export const DEFAULT_BACKEND_TIMEOUT_MS = 30_000
/** How much of an error body the message quotes. */
export const BODY_PREVIEW_CHARS = 512
// Error bodies are read only this far: enough for any preview, and a huge body (an HTML
// error page, a runaway stream) never sits in memory.
const ERROR_BODY_READ_BYTES = 16 * 1024
// A real usage payload is a few KB; anything past this is not one.
const MAX_PAYLOAD_BYTES = 1024 * 1024

/** Base class, so callers can catch every backend failure at once. */
export class BackendError extends Error {
  override name = 'BackendError'
}

/** The backend answered with a non-2xx status. */
export class BackendHttpError extends BackendError {
  override name = 'BackendHttpError'
  constructor(
    readonly status: number,
    /** `x-request-id` (or `x-oai-request-id`): what the backend's operators need to find it. */
    readonly requestId: string | null,
    message: string,
  ) {
    super(message)
  }
}

/** The backend answered 2xx, but not with a usage payload. */
export class BackendPayloadError extends BackendError {
  override name = 'BackendPayloadError'
}

/** No answer: connection refused, DNS, TLS, reset, timeout, or the request could not be sent. */
export class BackendNetworkError extends BackendError {
  override name = 'BackendNetworkError'
}

export class BackendClient {
  readonly usageUrl: string
  private readonly userAgent: string
  private readonly fetchImpl: typeof fetch
  private readonly timeoutMs: number

  constructor(options: BackendClientOptions) {
    this.usageUrl = joinUrl(normalizeBaseUrl(options.baseUrl), 'wham/usage')
    if (!isSendableHeaderValue(options.userAgent)) throw new TypeError('backend user agent is not a valid HTTP header value')
    this.userAgent = options.userAgent
    this.fetchImpl = options.fetch ?? globalThis.fetch
    this.timeoutMs = options.timeoutMs ?? DEFAULT_BACKEND_TIMEOUT_MS
  }

  /** `GET {base}/wham/usage`, validated against the usage payload schema. */
  async fetchUsage({ accessToken, accountId }: UsageRequest): Promise<UsagePayload> {
    const url = this.usageUrl
    const what = `GET ${url}`
    // Checked here because fetch's own complaint about a bad header quotes the value.
    if (!isSendableHeaderValue(accessToken) || accessToken === '') throw new BackendNetworkError(`${what} not sent: the access token is not a valid HTTP header value`)
    if (accountId !== null && !isSendableHeaderValue(accountId)) throw new BackendNetworkError(`${what} not sent: the account id is not a valid HTTP header value`)

    const headers: Record<string, string> = {
      Authorization: `Bearer ${accessToken}`,
      'User-Agent': this.userAgent,
      Accept: 'application/json',
    }
    if (accountId !== null) headers['ChatGPT-Account-Id'] = accountId

    const signal = AbortSignal.timeout(this.timeoutMs)
    let response: Response
    try {
      // No redirects: following one would send the bearer token to wherever it points.
      response = await this.fetchImpl(url, { method: 'GET', headers, signal, redirect: 'manual' })
    } catch (err) {
      throw new BackendNetworkError(`${what} failed: ${describeNetworkError(err, this.timeoutMs)}`)
    }

    const redact = (text: string) => redactSecret(text, accessToken)
    if (response.status < 200 || response.status > 299) {
      const requestId = requestIdOf(response.headers)
      const body = await readText(response, ERROR_BODY_READ_BYTES, signal).catch(() => ({ text: '', truncated: false }))
      const preview = oneLinePreview(redact(body.text), body.truncated, BODY_PREVIEW_CHARS)
      const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ''}`
      const id = requestId === null ? '' : `; request id ${requestId}`
      // The status text and the request id come from the backend too: redact all of it.
      throw new BackendHttpError(response.status, requestId === null ? null : redact(requestId), redact(`${what} failed: ${status}${id}; body: ${preview}`))
    }

    let body: { text: string; truncated: boolean }
    try {
      body = await readText(response, MAX_PAYLOAD_BYTES, signal)
    } catch (err) {
      throw new BackendNetworkError(`${what} failed while reading the response: ${describeNetworkError(err, this.timeoutMs)}`)
    }
    if (body.truncated) throw new BackendPayloadError(`${what}: usage response is larger than ${MAX_PAYLOAD_BYTES} bytes`)
    const json = tryParseJson(body.text)
    // The preview is redacted and short.
    if (json === undefined) throw new BackendPayloadError(`${what}: usage response is not JSON; body: ${oneLinePreview(redact(body.text), false, BODY_PREVIEW_CHARS)}`)
    const problem = usagePayloadProblem(json)
    if (problem !== null) throw new BackendPayloadError(`${what}: unexpected usage response ${problem}`)
    return json as UsagePayload
  }
}

// ---------------------------------------------------------------------------------------------
// URLs.

/**
 * Validates the base URL and brings it to codex's form: no trailing slash, and the bare
 * ChatGPT hosts get `/backend-api` (where the `wham` paths live). The URL is not quoted in
 * the error: it is configuration and might carry something it should not.
 */
function normalizeBaseUrl(baseUrl: string): URL {
  let url: URL
  try {
    url = new URL(baseUrl)
  } catch {
    throw new TypeError('backend base URL is not a valid URL')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError('backend base URL must be an http(s) URL')
  if (url.username !== '' || url.password !== '') throw new TypeError('backend base URL must not contain credentials')
  if (url.search !== '' || url.hash !== '') throw new TypeError('backend base URL must not have a query or fragment')
  let path = url.pathname.replace(/\/+$/, '')
  if ((url.hostname === 'chatgpt.com' || url.hostname === 'chat.openai.com') && !path.includes('/backend-api')) path += '/backend-api'
  url.pathname = path === '' ? '/' : path
  return url
}

/** `base` + `path` with exactly one slash between them, whatever either side brings. */
function joinUrl(base: URL, path: string): string {
  const joined = new URL(base.href)
  joined.pathname = `${joined.pathname.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`
  return joined.href
}

// ---------------------------------------------------------------------------------------------
// Bodies and messages.

/** Reads at most `maxBytes` of the body as text; throws what stopped the read early. */
async function readText(response: Response, maxBytes: number, signal: AbortSignal): Promise<{ text: string; truncated: boolean }> {
  const body = await readBounded(response, maxBytes, signal)
  // What stopped the read (an abort, a reset) goes on as it came, so callers can tell which.
  // eslint-disable-next-line @typescript-eslint/only-throw-error -- a caught value, rethrown
  if (body.error !== null) throw body.error
  return { text: body.bytes.toString('utf8'), truncated: body.truncated }
}

/** Removes the secret in the forms a body could echo it: as is, URL-encoded, base64. */
function redactSecret(text: string, secret: string): string {
  if (secret.length < 4) return text
  let out = text
  for (const form of new Set([secret, encodeURIComponent(secret), Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('base64url')])) {
    out = out.split(form).join(REDACTED)
  }
  return out
}

/**
 * Built from error names and codes only, never from an unknown error's message, which may
 * quote the request.
 */
function describeNetworkError(err: unknown, timeoutMs: number): string {
  const e = err as { name?: unknown } | null
  if (e?.name === 'TimeoutError') return `timed out after ${timeoutMs} ms`
  if (e?.name === 'AbortError') return 'aborted'
  const code = fetchErrorCode(err)
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused (ECONNREFUSED)'
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
      return `connection reset (${code})`
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `host not found (${code})`
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
      return `connect timed out (${code})`
    default:
      return networkErrorText(code)
  }
}
