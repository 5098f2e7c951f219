import { Type } from '../util/typebox.js'
import { shortReason } from '../log/scrub.js'
import { INTERNAL_ERROR, RpcError } from '../rpc/errors.js'
import { defineMethod, type MethodDefinition } from '../rpc/method.js'
import { ServerRequestError } from '../rpc/server-requests.js'
import { AccountOperationFailed, AccountRequestRefused, ExternalRefreshFailed, NotLoggedIn } from './errors.js'
import type { RateLimitsReader } from './rate-limits.js'
import { EXTERNAL_REFRESH_TIMEOUT_MS } from './recovery.js'
import type { AccountService } from './service.js'
import { GetAccountRateLimitsResult, PlanTypeSchema } from './usage.js'
import { Nullable, OptionalNullable } from '../util/typebox-nullable.js'

export type { RateLimitsReader } from './rate-limits.js'

export interface AccountServices {
  readonly accounts: AccountService
  readonly rateLimits: RateLimitsReader
  /** The engine's `requiresOpenaiAuth` (false when its model provider needs no OpenAI auth); null or absent: true. */
  readonly engineRequiresOpenaiAuth?: () => boolean | null
}


export const GetAccountParams = Type.Object({ refreshToken: Type.Optional(Type.Boolean()) })
export const GetAccountResult = Type.Object({
  account: Type.Union([
    Type.Null(),
    Type.Object({ type: Type.Literal('apiKey') }),
    Type.Object({ type: Type.Literal('chatgpt'), email: Nullable(Type.String()), planType: PlanTypeSchema }),
  ]),
  requiresOpenaiAuth: Type.Boolean(),
})

export const LoginAccountParams = Type.Union([
  Type.Object({ type: Type.Literal('apiKey'), apiKey: Type.String() }),
  Type.Object({ type: Type.Literal('chatgpt') }),
  Type.Object({ type: Type.Literal('chatgptDeviceCode') }),
  Type.Object({
    type: Type.Literal('chatgptAuthTokens'),
    accessToken: Type.String(),
    chatgptAccountId: Type.String(),
    chatgptPlanType: OptionalNullable(Type.String()),
  }),
])
export const LoginAccountResult = Type.Union([
  Type.Object({ type: Type.Literal('apiKey') }),
  Type.Object({ type: Type.Literal('chatgpt'), loginId: Type.String(), authUrl: Type.String() }),
  Type.Object({ type: Type.Literal('chatgptDeviceCode'), loginId: Type.String(), verificationUrl: Type.String(), userCode: Type.String() }),
  Type.Object({ type: Type.Literal('chatgptAuthTokens') }),
])

export const CancelLoginParams = Type.Object({ loginId: Type.String() })
export const CancelLoginResult = Type.Object({ status: Type.Union([Type.Literal('canceled'), Type.Literal('notFound')]) })

const RATE_LIMITS_NEED_AUTH = 'codex account authentication required to read rate limits'

/**
 * `account/*` methods: thin adapters from JSON-RPC to the account service, and the one place
 * account errors become wire errors. A refused request is -32600, a failed operation -32603,
 * both with the account error's own message; anything else is left to the dispatcher.
 */
export function accountMethods<S extends AccountServices>(): MethodDefinition<S, any>[] {
  return [
    defineMethod<S, typeof GetAccountParams>({
      name: 'account/read',
      scope: 'account:read',
      params: GetAccountParams,
      result: GetAccountResult,
      // The account is the gateway's; whether the engine's model provider needs it is the engine's answer.
      async handler(params, { services }) {
        const read = await wireErrors(services.accounts.read(params.refreshToken === undefined ? {} : { refreshToken: params.refreshToken }))
        return { ...read, requiresOpenaiAuth: services.engineRequiresOpenaiAuth?.() ?? read.requiresOpenaiAuth }
      },
    }),
    defineMethod<S, typeof LoginAccountParams>({
      name: 'account/login/start',
      scope: 'account:write',
      params: LoginAccountParams,
      result: LoginAccountResult,
      async handler(params, { services, session }) {
        const accounts = services.accounts
        switch (params.type) {
          case 'apiKey':
            await wireErrors(accounts.loginApiKey(params.apiKey))
            return { type: 'apiKey' as const }
          case 'chatgpt': {
            const { loginId, authUrl } = await wireErrors(accounts.loginChatgpt())
            return { type: 'chatgpt' as const, loginId, authUrl }
          }
          case 'chatgptDeviceCode': {
            const { loginId, verificationUrl, userCode } = await wireErrors(accounts.loginChatgptDeviceCode())
            return { type: 'chatgptDeviceCode' as const, loginId, verificationUrl, userCode }
          }
          case 'chatgptAuthTokens':
            await wireErrors(
              accounts.loginExternal(params, (refreshParams) =>
                session.request('account/chatgptAuthTokens/refresh', refreshParams, EXTERNAL_REFRESH_TIMEOUT_MS).catch((err: unknown) => {
                  if (!(err instanceof ServerRequestError)) throw err
                  throw new ExternalRefreshFailed(`auth refresh request failed: code=${err.error.code} message=${err.error.message}`)
                }),
              ),
            )
            return { type: 'chatgptAuthTokens' as const }
        }
      },
    }),
    defineMethod<S, typeof CancelLoginParams>({
      name: 'account/login/cancel',
      scope: 'account:write',
      params: CancelLoginParams,
      result: CancelLoginResult,
      handler: (params, { services }) => wireErrors(services.accounts.cancelLogin(params.loginId)),
    }),
    defineMethod<S, null>({
      name: 'account/logout',
      scope: 'account:write',
      params: null,
      result: Type.Object({}),
      async handler(_params, { services }) {
        await wireErrors(services.accounts.logout())
        return {}
      },
    }),
    defineMethod<S, null>({
      name: 'account/rateLimits/read',
      scope: 'account:read',
      params: null,
      result: GetAccountRateLimitsResult,
      async handler(_params, { services }) {
        const current = services.accounts.current
        if (current === null) throw RpcError.invalidRequest(RATE_LIMITS_NEED_AUTH)
        if (current.kind === 'apiKey') throw RpcError.invalidRequest('chatgpt authentication required to read rate limits')
        try {
          return await services.accounts.withChatgptAuth((auth) => services.rateLimits.read(auth))
        } catch (err) {
          // Refusals keep their own words; every failure reads as a failed rate-limits fetch.
          if (err instanceof NotLoggedIn) throw RpcError.invalidRequest(RATE_LIMITS_NEED_AUTH)
          if (err instanceof AccountRequestRefused) throw RpcError.invalidRequest(err.message)
          throw new RpcError(INTERNAL_ERROR, `failed to fetch codex rate limits: ${shortReason(err)}`)
        }
      },
    }),
  ]
}

/** Account errors as wire errors; any other rejection passes through unchanged. */
async function wireErrors<T>(work: Promise<T>): Promise<T> {
  try {
    return await work
  } catch (err) {
    if (err instanceof AccountRequestRefused) throw RpcError.invalidRequest(err.message)
    if (err instanceof AccountOperationFailed) throw new RpcError(INTERNAL_ERROR, err.message)
    throw err
  }
}
