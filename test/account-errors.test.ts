/**
 * The account domain's errors and predicates: which family each error belongs to (that is
 * what the JSON-RPC layer maps to -32600 or -32603), and the explicit signals that replaced
 * duck typing: `CredentialRejected` for "the backend refused this credential" and
 * `isPermanentRefreshError` for "the refresh token is dead".
 */
import t from 'tap'
import {
  AccountError,
  AccountOperationFailed,
  AccountRequestRefused,
  CredentialRejected,
  CredentialSaveFailed,
  ExternalRefreshFailed,
  InvalidLoginId,
  isCredentialRejected,
  LoginRuleViolation,
  NotLoggedIn,
  RefreshFailed,
} from '../src/account/errors.js'
import { isPermanentRefreshError, RefreshError } from '../src/account/oauth-client.js'
import { RemoteControlHttpError } from '../src/remote-control/types.js'
import { RpcError } from '../src/rpc/errors.js'

t.test('refusals and failures are two families of account errors, none of them an RpcError', async (t) => {
  const refused = [new LoginRuleViolation('API key login is disabled. Use ChatGPT login instead.'), new InvalidLoginId('nope'), new NotLoggedIn()]
  const failed = [new CredentialSaveFailed('failed to save api key: disk full'), new RefreshFailed('failed to refresh ChatGPT tokens: 503', false), new ExternalRefreshFailed('auth refresh request failed: no client to ask')]
  for (const err of refused) {
    t.type(err, AccountRequestRefused, `${err.name} is a refusal`)
    t.notOk(err instanceof AccountOperationFailed, `${err.name} is not a failure`)
  }
  for (const err of failed) {
    t.type(err, AccountOperationFailed, `${err.name} is a failure`)
    t.notOk(err instanceof AccountRequestRefused, `${err.name} is not a refusal`)
  }
  for (const err of [...refused, ...failed]) {
    t.type(err, AccountError)
    t.notOk(err instanceof RpcError, `${err.name} knows nothing of JSON-RPC`)
    t.not(err.name, 'Error', `${err.name} names itself`)
  }
  t.equal(new InvalidLoginId('not-a-uuid').message, 'invalid login id: not-a-uuid')
  t.equal(new NotLoggedIn().message, 'codex account authentication required', 'neutral: no caller purpose in the domain message')
  t.notMatch(new NotLoggedIn().message, /rate limits/)
})

t.test('CredentialRejected wraps the call’s own error; nothing else counts as a rejection', async (t) => {
  const http = new RemoteControlHttpError(403, 'enroll failed: 403 Forbidden', null, { detail: 'Forbidden' })
  const rejected = new CredentialRejected(http)
  t.ok(isCredentialRejected(rejected))
  t.equal(rejected.cause, http, 'the original error, status untouched')
  t.equal(http.status, 403, 'wrapping never rewrites the status')
  t.equal(rejected.message, http.message, 'same words as the call’s error')
  t.equal(rejected.name, 'CredentialRejected')

  t.notOk(isCredentialRejected(Object.assign(new Error('backend said 401'), { status: 401 })), 'a `status: 401` property is no longer a contract')
  t.notOk(isCredentialRejected(http), 'an HTTP error itself is not a rejection until its caller says so')
  t.notOk(isCredentialRejected(null))
  t.notOk(isCredentialRejected('401'))
})

t.test('isPermanentRefreshError: only a RefreshError marked permanent', async (t) => {
  t.ok(isPermanentRefreshError(new RefreshError(true, 'expired', 'expired')))
  t.ok(isPermanentRefreshError(new RefreshError(true, 'unauthorized', 'no')))
  t.notOk(isPermanentRefreshError(new RefreshError(false, 'transient', 'Failed to refresh token: 503: busy')))
  t.notOk(isPermanentRefreshError(Object.assign(new Error('dead'), { permanent: true })), 'a `permanent` property is no longer a contract')
  t.notOk(isPermanentRefreshError(new RefreshFailed('dead', true)), "the service's own error is not the issuer's")
  t.notOk(isPermanentRefreshError(undefined))
})
