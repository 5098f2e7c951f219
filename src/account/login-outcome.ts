/**
 * How a ChatGPT login (browser or device code) ends, and the step both share once the auth
 * server has handed over an authorization code: exchange it, read the id token's claims, and
 * apply the forced-workspace rule.
 *
 * Tokens nobody will keep are revoked at once: those of a login that was cancelled or timed
 * out while the exchange ran, and those of a workspace the rules forbid.
 */
import { readIdTokenClaims, type TokenClaims } from './jwt-claims.js'
import type { CallbackFailureReason } from './login-server.js'
import { TokenExchangeError, type ExchangeCodeParams, type OAuthClient } from './oauth-client.js'
import type { ManagedTokens } from './types.js'

export type LoginErrorReason = CallbackFailureReason | 'timeout' | 'workspace' | 'exchange_failed' | 'expired' | 'device_failed'

/** Why a login ended without tokens; the message is for the user and holds no secret. */
export class LoginError extends Error {
  override name = 'LoginError'
  constructor(
    readonly reason: LoginErrorReason,
    message: string,
  ) {
    super(message)
  }
}

export type LoginOutcome =
  | { readonly ok: true; readonly tokens: ManagedTokens; readonly claims: TokenClaims }
  | { readonly ok: false; readonly error: LoginError }

export const LOGIN_CANCELLED = 'Login cancelled'

/**
 * Exchanges the code and checks the workspace. Null when the login ended (`hasEnded`) while
 * the exchange ran: the tokens were revoked and the login's own ending stands.
 */
export async function exchangeForLogin(
  oauth: Pick<OAuthClient, 'exchangeCode' | 'revoke'>,
  params: ExchangeCodeParams,
  allowedWorkspaceIds: readonly string[] | null | undefined,
  hasEnded: () => boolean,
): Promise<LoginOutcome | null> {
  let tokens
  try {
    tokens = await oauth.exchangeCode(params)
  } catch (err) {
    const message = err instanceof TokenExchangeError ? err.message : 'Token exchange failed'
    return { ok: false, error: new LoginError('exchange_failed', message) }
  }
  if (hasEnded()) {
    await oauth.revoke(tokens.refreshToken)
    return null
  }
  const claims = readIdTokenClaims(tokens.idToken)
  const violation = workspaceViolation(allowedWorkspaceIds, claims.chatgptAccountId)
  if (violation !== null) {
    await oauth.revoke(tokens.refreshToken)
    return { ok: false, error: new LoginError('workspace', violation) }
  }
  return { ok: true, tokens: { ...tokens, accountId: claims.chatgptAccountId }, claims }
}

/** Codex's rule and wording (`ensure_workspace_allowed`); null when the login may proceed. */
export function workspaceViolation(allowed: readonly string[] | null | undefined, accountId: string | null): string | null {
  if (!allowed || allowed.length === 0) return null
  if (accountId === null) {
    return 'Login is restricted to a specific workspace, but the token did not include an chatgpt_account_id claim.'
  }
  return allowed.includes(accountId) ? null : `Login is restricted to workspace id(s) ${allowed.join(', ')}.`
}
