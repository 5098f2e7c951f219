import { Type } from '../../util/typebox.js'
import type { SessionEngine } from '../../engine/forward.js'
import { RpcError } from '../errors.js'
import { defineMethod, type MethodDefinition } from '../method.js'
import type { UserAgent } from '../user-agent.js'
import { boundedClientText, CLIENT_TEXT_MAX } from '../../util/client-text.js'
import { hasNoHeaderControls } from '../../util/header-value.js'
import { OptionalNullable } from '../../util/typebox-nullable.js'

export interface ServerInfo {
  /** This server's home directory, reported as `codexHome`. */
  readonly home: string
  readonly userAgent: UserAgent
  readonly platformFamily: string
  readonly platformOs: string
}

/** Unknown members are accepted and ignored, as codex (serde) does. */
export const InitializeParams = Type.Object({
  clientInfo: Type.Object({
    name: Type.String(),
    title: OptionalNullable(Type.String()),
    version: Type.String(),
  }),
  capabilities: Type.Optional(
    Type.Union([
      Type.Object({
        experimentalApi: Type.Optional(Type.Boolean()),
        optOutNotificationMethods: OptionalNullable(Type.Array(Type.String())),
      }),
      Type.Null(),
    ]),
  ),
})

export const InitializeResult = Type.Object({
  userAgent: Type.String(),
  codexHome: Type.String(),
  platformFamily: Type.String(),
  platformOs: Type.String(),
})

/**
 * `initialize`: the gateway's checks (`Already initialized`, the client name), then, when an
 * engine runs, the session's upstream is opened with the client's params and the client gets
 * the engine's result; without an engine, the gateway's own. A failed upstream leaves the
 * session uninitialized.
 */
export function initializeMethods<S extends { serverInfo: ServerInfo; engine?: SessionEngine }>(): MethodDefinition<S, any>[] {
  return [
    defineMethod<S, typeof InitializeParams>({
      name: 'initialize',
      scope: 'session',
      params: InitializeParams,
      result: InitializeResult,
      beforeInitialize: true,
      async handler(params, { session, services }) {
        if (session.initialized) throw RpcError.invalidRequest('Already initialized')
        const { name, title, version } = params.clientInfo
        if (!hasNoHeaderControls(name)) {
          // Codex's wording, the name as sent (it goes back only to its sender, JSON-escaped);
          // a long one is cut, so a 16 MiB name does not come back whole.
          const shown = name.length <= CLIENT_TEXT_MAX ? name : boundedClientText(name)
          throw RpcError.invalidRequest(`Invalid clientInfo.name: '${shown}'. Must be a valid HTTP header value.`)
        }
        const engineResult = services.engine === undefined ? null : await services.engine.openFor(session, params)
        session.markInitialized({ name, title: title ?? null, version }, params.capabilities?.optOutNotificationMethods ?? [])
        if (engineResult !== null) return engineResult
        const info = services.serverInfo
        const userAgent = info.userAgent.forClient(name, version)
        return { userAgent, codexHome: info.home, platformFamily: info.platformFamily, platformOs: info.platformOs }
      },
    }),
  ]
}
