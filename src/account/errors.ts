/**
 * The account domain's errors. Two families, because callers react to them differently:
 *
 * - `AccountRequestRefused`: the request cannot be done as asked (a login rule, a bad login
 *   id, no ChatGPT credential). Asking again the same way gives the same answer.
 * - `AccountOperationFailed`: the request was fine but doing it failed (saving, refreshing,
 *   asking the client for tokens).
 *
 * Messages are written for people and may be shown to clients: fixed wording plus values the
 * client sent or a `shortReason`, never a credential. Nothing here knows about JSON-RPC; the
 * account methods map these to wire errors.
 *
 * `CredentialRejected` is the other direction: a backend call made through
 * `withChatgptAuth` throws it to say "the backend refused this credential", which starts
 * the recovery (reload, refresh, or ask the client) and one retry.
 */

export abstract class AccountError extends Error {}

export abstract class AccountRequestRefused extends AccountError {}

export abstract class AccountOperationFailed extends AccountError {}

/** A login rule (forced method, forced workspace, external auth active) forbids this. */
export class LoginRuleViolation extends AccountRequestRefused {
  override name = 'LoginRuleViolation'
}

/** `account/login/cancel` with something that is not a login id. */
export class InvalidLoginId extends AccountRequestRefused {
  override name = 'InvalidLoginId'
  constructor(loginId: string) {
    super(`invalid login id: ${loginId}`)
  }
}

/** A ChatGPT credential is needed and there is none (nobody logged in, or an API key). */
export class NotLoggedIn extends AccountRequestRefused {
  override name = 'NotLoggedIn'
  constructor() {
    super('codex account authentication required')
  }
}

/** The credential could not be stored. */
export class CredentialSaveFailed extends AccountOperationFailed {
  override name = 'CredentialSaveFailed'
}

/** Logout could not remove the stored credential: it is still there, so nobody is logged out. */
export class CredentialClearFailed extends AccountOperationFailed {
  override name = 'CredentialClearFailed'
}

/**
 * Refreshing the managed ChatGPT tokens failed. `permanent`: the refresh token is dead, so
 * the failure is kept (and answered without asking the issuer) until the credential changes.
 */
export class RefreshFailed extends AccountOperationFailed {
  override name = 'RefreshFailed'
  constructor(
    message: string,
    readonly permanent: boolean,
  ) {
    super(message)
  }
}

/** The client that handed in external tokens did not hand over usable fresh ones. */
export class ExternalRefreshFailed extends AccountOperationFailed {
  override name = 'ExternalRefreshFailed'
}

/**
 * Thrown by a call made through `withChatgptAuth` when the backend refused the credential.
 * Carries the call's own error; when recovery cannot help, that error is what surfaces.
 */
export class CredentialRejected extends Error {
  override name = 'CredentialRejected'
  constructor(override readonly cause: Error) {
    super(cause.message)
  }
}

export function isCredentialRejected(err: unknown): err is CredentialRejected {
  return err instanceof CredentialRejected
}
