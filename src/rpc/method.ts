import type { TSchema, Static } from '../util/typebox.js'
import type { Scope } from '../auth/principal.js'
import type { Session } from './session.js'

/** What every handler receives besides its params. Services come from the app's plugins. */
export interface HandlerContext<Services> {
  readonly session: Session
  readonly services: Services
}

/**
 * One JSON-RPC method: its name, the scope a connection must hold, the TypeBox schema of its
 * params (`null`: takes none), and its handler. Schemas are compiled once by the dispatcher.
 */
export interface MethodDefinition<Services, P extends TSchema | null = TSchema | null> {
  readonly name: string
  readonly scope: Scope
  readonly params: P
  /** Schema of the result; tests check every result the server sends against it. */
  readonly result?: TSchema
  /** Allowed before `initialize` (only `initialize` itself). */
  readonly beforeInitialize?: boolean
  readonly handler: (params: P extends TSchema ? Static<P> : undefined, ctx: HandlerContext<Services>) => unknown
}

/** Typed helper: infers the params type of the handler from the schema. */
export function defineMethod<Services, P extends TSchema | null>(def: MethodDefinition<Services, P>): MethodDefinition<Services, P> {
  return def
}
