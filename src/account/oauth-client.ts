/**
 * The auth server's OAuth endpoints as the ChatGPT login and the token refresh use them: the
 * authorize URL, the code exchange, refresh and best-effort revocation.
 *
 * Error messages are for people and logs: they carry statuses and the server's error codes,
 * never a token, code or verifier. Server-provided text is cut short, stripped to printable
 * characters and scrubbed of the secrets the request carried, in case a server echoes them.
 */
import { printableErrorCode } from '../util/error-code.js'
import { isJsonObject, parseJsonObject } from '../util/json.js'
import { REDACTED } from '../util/redaction-markers.js'

/** What codex sends as `originator` unless a client named itself. */
export const DEFAULT_ORIGINATOR = 'codex_cli_rs'
/**
 * The scope this server asks for: identity, email and a refresh token. Narrower than codex's,
 * which also asks for `api.connectors.*`, a grant this server never uses.
 */
export const LOGIN_SCOPE = 'openid profile email offline_access'

const DEFAULT_TIMEOUT_MS = 30_000
/** Codex's revoke timeout: logout must not hang on an unreachable auth server. */
const DEFAULT_REVOKE_TIMEOUT_MS = 10_000
const MAX_DETAIL_CHARS = 200

// Codex's wording (login/src/auth/manager.rs), so users see the same advice.
const REFRESH_MESSAGES = {
  expired: 'Your access token could not be refreshed because your refresh token has expired. Please log out and sign in again.',
  reused: 'Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again.',
  invalidated: 'Your access token could not be refreshed because your refresh token was revoked. Please log out and sign in again.',
  unauthorized: 'Your access token could not be refreshed. Please log out and sign in again.',
} as const

export interface OAuthClientOptions {
  /** e.g. `https://auth.openai.com`; a trailing slash is ignored. */
  readonly issuer: string
  readonly clientId: string
  readonly fetch?: typeof fetch
  /** For the code exchange and refresh. */
  readonly timeoutMs?: number
  readonly revokeTimeoutMs?: number
  readonly originator?: string
}

export interface AuthorizeUrlParams {
  readonly redirectUri: string
  readonly codeChallenge: string
  readonly state: string
  /** `forcedChatgptWorkspaceId`: the auth server offers only these workspaces. */
  readonly allowedWorkspaceIds?: readonly string[] | null
  /** Overrides the client's originator (the first JSON-RPC client's name, as in codex). */
  readonly originator?: string
}

export interface ExchangeCodeParams {
  readonly code: string
  readonly redirectUri: string
  readonly codeVerifier: string
}

export interface ExchangedTokens {
  readonly idToken: string
  readonly accessToken: string
  readonly refreshToken: string
}

/** A refresh answer: the server may omit the id and refresh tokens, which then stay as they were. */
export interface RefreshedTokens {
  readonly accessToken: string
  readonly idToken: string | null
  readonly refreshToken: string | null
}

/** The code exchange failed; `status` is null when no HTTP answer came. */
export class TokenExchangeError extends Error {
  override name = 'TokenExchangeError'
  constructor(
    message: string,
    readonly status: number | null,
  ) {
    super(message)
  }
}

export type RefreshFailureReason = 'expired' | 'reused' | 'invalidated' | 'unauthorized' | 'transient'

/**
 * A refresh failed. `permanent` failures (the refresh token is dead) are cached by the account
 * service until the credential changes; transient ones may be retried.
 */
export class RefreshError extends Error {
  override name = 'RefreshError'
  constructor(
    readonly permanent: boolean,
    readonly reason: RefreshFailureReason,
    message: string,
  ) {
    super(message)
  }
}

/** A refresh failure retrying cannot heal: the refresh token is expired, reused or revoked. */
export function isPermanentRefreshError(err: unknown): err is RefreshError {
  return err instanceof RefreshError && err.permanent
}

export class OAuthClient {
  readonly issuer: string
  readonly clientId: string
  private readonly fetchFn: typeof fetch
  private readonly timeoutMs: number
  private readonly revokeTimeoutMs: number
  private readonly originator: string

  constructor(options: OAuthClientOptions) {
    this.issuer = options.issuer.replace(/\/+$/, '')
    this.clientId = options.clientId
    this.fetchFn = options.fetch ?? fetch
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.revokeTimeoutMs = options.revokeTimeoutMs ?? DEFAULT_REVOKE_TIMEOUT_MS
    this.originator = options.originator ?? DEFAULT_ORIGINATOR
  }

  /**
   * `{issuer}/oauth/authorize?...` in codex's parameter order, values percent-encoded as codex
   * does (spaces as `%20`). `id_token_add_organizations` puts the workspace claims in the id
   * token; `codex_cli_simplified_flow` and `originator` select codex's login pages.
   */
  authorizeUrl(params: AuthorizeUrlParams): string {
    const query: Array<[string, string]> = [
      ['response_type', 'code'],
      ['client_id', this.clientId],
      ['redirect_uri', params.redirectUri],
      ['scope', LOGIN_SCOPE],
      ['code_challenge', params.codeChallenge],
      ['code_challenge_method', 'S256'],
      ['id_token_add_organizations', 'true'],
      ['codex_cli_simplified_flow', 'true'],
      ['state', params.state],
      ['originator', params.originator ?? this.originator],
    ]
    const workspaces = params.allowedWorkspaceIds
    if (workspaces && workspaces.length > 0) query.push(['allowed_workspace_id', workspaces.join(',')])
    const qs = query.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&')
    return `${this.issuer}/oauth/authorize?${qs}`
  }

  /** `POST {issuer}/oauth/token`, form-encoded `grant_type=authorization_code`. */
  async exchangeCode(params: ExchangeCodeParams): Promise<ExchangedTokens> {
    const secrets = [params.code, params.codeVerifier]
    const body = new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.code,
      redirect_uri: params.redirectUri,
      client_id: this.clientId,
      code_verifier: params.codeVerifier,
    })
    let response: Response
    try {
      response = await this.post('/oauth/token', body, this.timeoutMs)
    } catch (err) {
      throw new TokenExchangeError(`Token exchange failed: ${describeFetchFailure(err, this.timeoutMs)}`, null)
    }
    const text = await readText(response)
    if (!response.ok) {
      const detail = safeDetail(parseErrorBody(text).display, secrets)
      throw new TokenExchangeError(`Token exchange failed: token endpoint returned status ${response.status}: ${detail}`, response.status)
    }
    const json = parseJsonObject(text)
    if (json === null) throw new TokenExchangeError('Token exchange failed: the token endpoint answered with something other than a JSON object', response.status)
    for (const field of ['id_token', 'access_token', 'refresh_token'] as const) {
      if (typeof json[field] !== 'string' || json[field] === '') {
        throw new TokenExchangeError(`Token exchange failed: the token endpoint's answer has no ${field}`, response.status)
      }
    }
    return { idToken: json.id_token as string, accessToken: json.access_token as string, refreshToken: json.refresh_token as string }
  }

  /**
   * `POST {issuer}/oauth/token` with `grant_type=refresh_token`. Form-encoded like the code
   * exchange, as RFC 6749 has it (codex posts JSON, but a standard token endpoint — the test
   * server's included — parses forms only).
   *
   * Permanent: a 401 (classified by codex's error codes), any answer carrying
   * `refresh_token_expired` / `_reused` / `_invalidated`, and the standard `invalid_grant`
   * (RFC 6749: the refresh token is invalid, expired or revoked — retrying cannot help).
   */
  async refresh(refreshToken: string): Promise<RefreshedTokens> {
    const secrets = [refreshToken]
    const body = new URLSearchParams({ client_id: this.clientId, grant_type: 'refresh_token', refresh_token: refreshToken })
    let response: Response
    try {
      response = await this.post('/oauth/token', body, this.timeoutMs)
    } catch (err) {
      throw new RefreshError(false, 'transient', `Failed to refresh token: ${describeFetchFailure(err, this.timeoutMs)}`)
    }
    const text = await readText(response)
    if (!response.ok) throw classifyRefreshFailure(response.status, text, secrets)
    const json = parseJsonObject(text)
    if (json === null || typeof json.access_token !== 'string' || json.access_token === '') {
      throw new RefreshError(false, 'transient', 'Failed to refresh token: the token endpoint answered without an access token')
    }
    return {
      accessToken: json.access_token,
      idToken: typeof json.id_token === 'string' && json.id_token !== '' ? json.id_token : null,
      refreshToken: typeof json.refresh_token === 'string' && json.refresh_token !== '' ? json.refresh_token : null,
    }
  }

  /**
   * `POST {issuer}/oauth/revoke` (RFC 7009), best-effort: logout and superseded logins go on
   * whatever happens here, so this never throws. True when the server accepted the request.
   */
  async revoke(token: string, tokenTypeHint: 'refresh_token' | 'access_token' = 'refresh_token'): Promise<boolean> {
    try {
      const body = new URLSearchParams({ token, token_type_hint: tokenTypeHint, client_id: this.clientId })
      const response = await this.post('/oauth/revoke', body, this.revokeTimeoutMs)
      await readText(response)
      return response.ok
    } catch {
      return false
    }
  }

  private post(path: string, body: URLSearchParams, timeoutMs: number): Promise<Response> {
    return this.fetchFn(`${this.issuer}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: body.toString(),
      redirect: 'error',
      signal: AbortSignal.timeout(timeoutMs),
    })
  }
}

function classifyRefreshFailure(status: number, text: string, secrets: readonly string[]): RefreshError {
  const parsed = parseErrorBody(text)
  const code = parsed.code?.toLowerCase() ?? null
  switch (code) {
    case 'refresh_token_expired':
      return new RefreshError(true, 'expired', REFRESH_MESSAGES.expired)
    case 'refresh_token_reused':
      return new RefreshError(true, 'reused', REFRESH_MESSAGES.reused)
    case 'refresh_token_invalidated':
      return new RefreshError(true, 'invalidated', REFRESH_MESSAGES.invalidated)
  }
  if (status === 401 || (status === 400 && code === 'invalid_grant')) {
    return new RefreshError(true, 'unauthorized', REFRESH_MESSAGES.unauthorized)
  }
  return new RefreshError(false, 'transient', `Failed to refresh token: ${status}: ${safeDetail(parsed.display, secrets)}`)
}

export interface ErrorBody {
  /** The machine code: `error` (string), `error.code`, or a top-level `code`. */
  readonly code: string | null
  /** What to show: the description or message, else the code, else the raw text. */
  readonly display: string
}

/** Reads both the OAuth (`{error, error_description}`) and the OpenAI (`{error: {code, message}}`) shapes. */
export function parseErrorBody(text: string): ErrorBody {
  const trimmed = text.trim()
  if (trimmed === '') return { code: null, display: 'unknown error' }
  const json = parseJsonObject(trimmed)
  if (json === null) return { code: null, display: trimmed }
  const err = json.error
  const errObj = isJsonObject(err) ? err : null
  const code = nonBlank(err) ?? nonBlank(errObj?.code) ?? nonBlank(json.code)
  const display = nonBlank(json.error_description) ?? nonBlank(errObj?.message) ?? code ?? 'unknown error'
  return { code, display }
}

/** Server text made safe to show: secrets scrubbed, printable only, short. */
export function safeDetail(text: string, secrets: readonly string[]): string {
  let out = text
  for (const s of secrets) {
    if (s.length === 0) continue
    out = out.split(s).join(REDACTED)
    const encoded = encodeURIComponent(s)
    if (encoded !== s) out = out.split(encoded).join(REDACTED)
  }
  out = out.replace(/[^\x20-\x7e]+/g, ' ').trim()
  return out.length > MAX_DETAIL_CHARS ? `${out.slice(0, MAX_DETAIL_CHARS)}…` : out
}

/** Why fetch failed, from the error's kind and code only (its message may quote the URL). */
export function describeFetchFailure(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
    return `the auth server did not answer within ${Math.round(timeoutMs / 1000)} s`
  }
  const code = err instanceof Error ? printableErrorCode((err as Error & { cause?: unknown }).cause) : undefined
  return code !== undefined
    ? `could not reach the auth server (${code})`
    : 'could not reach the auth server'
}

export async function readText(response: Response): Promise<string> {
  try {
    return await response.text()
  } catch {
    return ''
  }
}

function nonBlank(v: unknown): string | null {
  return typeof v === 'string' && v.trim() !== '' ? v : null
}
