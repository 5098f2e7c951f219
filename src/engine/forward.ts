/**
 * Which client requests go to the engine, the gateway's checks before one does, and how a
 * session gets its upstream.
 *
 * Routing: a method the gateway answers (the dispatcher knows it) is dispatched. Any other
 * goes to the engine path — except, for a session without an upstream, a method the scope
 * table does not know either: that keeps the dispatcher's `unknown variant` answer, as a
 * gateway without an engine always gave.
 *
 * Checks on the engine path, after the session's rate limit and in-flight bounds, in order:
 * 1. the engine reads the frame as the gateway did (frame-check.ts): `Invalid request: ...`
 *    otherwise — first, as the dispatcher checks that a request parses first;
 * 2. the session is initialized (`Not initialized`);
 * 3. the principal holds the method's scope (`scopeOf`; a method the table does not know
 *    needs every scope): `method X requires scope Y`, naming the first scope missing;
 * 4. the session has an upstream (`engine unavailable` otherwise: no engine was running at
 *    its `initialize`).
 * Only then is the original frame text forwarded, with the client's own id.
 *
 * A client notification is forwarded only when checks 1 and 3 pass for its method (`initialized`
 * needs `session`; a request method sent without an id needs that method's scope; any other
 * method every scope, as an unknown request does). A refused one is dropped: a notification
 * has no answer.
 */
import { SCOPES, type Principal, type Scope } from '../auth/principal.js'
import type { AppLogger } from '../log/logger.js'
import { INVALID_REQUEST, RpcError } from '../rpc/errors.js'
import type { RpcErrorBody } from '../rpc/wire.js'
import { boundedClientText } from '../util/client-text.js'
import type { JsonObject } from '../util/json.js'
import { engineFrameProblem, engineValueProblem } from './frame-check.js'
import { notificationScopeOf, scopeOf } from './scopes.js'
import type { EngineService } from './service.js'
import { ENGINE_UNAVAILABLE, EngineUnavailableError, type EngineUpstream } from './upstream.js'

export { ENGINE_UNAVAILABLE }

/** Whether a request for `method` takes the engine path. */
export function goesToEngine(method: string, gatewayAnswers: boolean, hasUpstream: boolean): boolean {
  if (gatewayAnswers) return false
  return hasUpstream || scopeOf(method) !== 'ALL'
}

/** The gateway's refusal of an engine-bound request (checks 1 to 3 above), or null. */
export function engineRequestRefusal(
  session: { readonly initialized: boolean; readonly principal: Principal },
  method: string,
  text: string,
  frame: JsonObject,
): RpcErrorBody | null {
  const problem = engineFrameProblem(text, frame)
  if (problem !== null) return { code: INVALID_REQUEST, message: `Invalid request: ${problem}` }
  if (!session.initialized) return { code: INVALID_REQUEST, message: 'Not initialized' }
  const missing = missingScope(session.principal, scopeOf(method))
  // An unknown method (it needs every scope) is the client's text: echoed bounded and escaped.
  return missing === undefined ? null : { code: INVALID_REQUEST, message: `method ${boundedClientText(method)} requires scope ${missing}` }
}

/** Why a client notification is not forwarded to the engine (see the header), or null. */
export function engineNotificationRefusal(principal: Principal, method: string, text: string, frame: JsonObject): string | null {
  const problem = engineFrameProblem(text, frame)
  if (problem !== null) return problem
  const missing = missingScope(principal, notificationScopeOf(method))
  return missing === undefined ? null : `needs scope ${missing}`
}

/** The first scope `principal` lacks of what `needed` asks, or undefined when it holds them. */
function missingScope(principal: Principal, needed: Scope | 'ALL'): Scope | undefined {
  const scopes = principal.scopes
  if (needed === 'ALL') return SCOPES.find((s) => !scopes.has(s))
  return scopes.has(needed) ? undefined : needed
}

/** What a session offers its upstream and the `initialize` handler. */
export interface UpstreamSession {
  readonly principal: Principal
  readonly log: AppLogger
  /** Sends a frame written elsewhere (by the engine), as it is; false: stop reading until `resume`. */
  relay(text: string, resume: () => void): boolean
  close(code: number, reason: string): void
  /** Takes the upstream; false when the session already has one or has closed (the caller closes it). */
  attachUpstream(upstream: EngineUpstream): boolean
}

/** How `initialize` reaches the engine. */
export interface SessionEngine {
  /**
   * Opens the session's upstream with the client's `initialize` params; resolves with the
   * engine's result, or null when no engine runs (the gateway answers itself). Rejects with
   * an `RpcError`: `engine unavailable`, or `Already initialized` for a second `initialize`
   * racing the first.
   */
  openFor(session: UpstreamSession, initializeParams: unknown): Promise<unknown>
}

export function sessionEngine(engine: EngineService): SessionEngine {
  return {
    async openFor(session, initializeParams) {
      // The gateway writes these params into the upstream's own `initialize` (its level 2): one
      // the engine cannot read would leave the client waiting for the open timeout.
      const problem = engineValueProblem(initializeParams, 2)
      if (problem !== null) throw RpcError.invalidRequest(`Invalid request: ${problem}`)
      let opened
      try {
        opened = await engine.openUpstream(
          {
            sendToClient: (text, resume) => session.relay(text, resume),
            closeClient: (code, reason) => session.close(code, reason),
            holdsExec: session.principal.scopes.has('exec'),
          },
          initializeParams,
          session.log,
        )
      } catch (err) {
        if (!(err instanceof EngineUnavailableError)) throw err
        session.log.warn({ event: 'engine.upstream_failed', why: err.message }, 'could not open the engine upstream')
        throw new RpcError(ENGINE_UNAVAILABLE.code, ENGINE_UNAVAILABLE.message)
      }
      if (opened === null) return null
      if (!session.attachUpstream(opened.upstream)) {
        opened.upstream.close()
        throw RpcError.invalidRequest('Already initialized')
      }
      return opened.result
    },
  }
}
