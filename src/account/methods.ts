import { Type } from 'typebox'
import { INTERNAL_ERROR, RpcError } from '../rpc/errors.js'
import { defineMethod, type MethodDefinition } from '../rpc/method.js'
import { EXTERNAL_REFRESH_TIMEOUT_MS, shortReason, type AccountService } from './service.js'
import { GetAccountRateLimitsResult, PlanTypeSchema } from './usage.js'

/** Reads and maps the usage backend for a ChatGPT credential. */
export interface RateLimitsReader {
  read(auth: { accessToken: string; accountId: string | null }): Promise<unknown>
}

export interface AccountServices {
  readonly accounts: AccountService
  readonly rateLimits: RateLimitsReader
}

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()])

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
  Type.Object({
    type: Type.Literal('chatgptAuthTokens'),
    accessToken: Type.String(),
    chatgptAccountId: Type.String(),
    chatgptPlanType: Type.Optional(Nullable(Type.String())),
  }),
])
export const LoginAccountResult = Type.Union([
  Type.Object({ type: Type.Literal('apiKey') }),
  Type.Object({ type: Type.Literal('chatgpt'), loginId: Type.String(), authUrl: Type.String() }),
  Type.Object({ type: Type.Literal('chatgptAuthTokens') }),
])

export const CancelLoginParams = Type.Object({ loginId: Type.String() })
export const CancelLoginResult = Type.Object({ status: Type.Union([Type.Literal('canceled'), Type.Literal('notFound')]) })

/** `account/*` methods: thin adapters from JSON-RPC to the account service. */
export function accountMethods<S extends AccountServices>(): MethodDefinition<S, any>[] {
  return [
    defineMethod<S, typeof GetAccountParams>({
      name: 'account/read',
      scope: 'account:read',
      params: GetAccountParams,
      result: GetAccountResult,
      handler: (params, { services }) => services.accounts.read(params.refreshToken === undefined ? {} : { refreshToken: params.refreshToken }),
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
            await accounts.loginApiKey(params.apiKey)
            return { type: 'apiKey' as const }
          case 'chatgpt': {
            const { loginId, authUrl } = await accounts.loginChatgpt()
            return { type: 'chatgpt' as const, loginId, authUrl }
          }
          case 'chatgptAuthTokens':
            await accounts.loginExternal(params, (refreshParams) =>
              session.request('account/chatgptAuthTokens/refresh', refreshParams, EXTERNAL_REFRESH_TIMEOUT_MS),
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
      handler: (params, { services }) => services.accounts.cancelLogin(params.loginId),
    }),
    defineMethod<S, null>({
      name: 'account/logout',
      scope: 'account:write',
      params: null,
      result: Type.Object({}),
      async handler(_params, { services }) {
        await services.accounts.logout()
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
        if (current === null) throw RpcError.invalidRequest('codex account authentication required to read rate limits')
        if (current.kind === 'apiKey') throw RpcError.invalidRequest('chatgpt authentication required to read rate limits')
        try {
          return await services.accounts.withChatgptAuth((auth) => services.rateLimits.read(auth))
        } catch (err) {
          if (err instanceof RpcError && err.code !== INTERNAL_ERROR) throw err
          throw new RpcError(INTERNAL_ERROR, `failed to fetch codex rate limits: ${shortReason(err)}`)
        }
      },
    }),
  ]
}
