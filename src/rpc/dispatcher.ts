import { Compile, type TSchema, type Validator } from '../util/typebox.js'
import { withheldError } from '../log/logger.js'
import { INTERNAL_ERROR, INVALID_REQUEST, RpcError } from './errors.js'
import type { MethodDefinition } from './method.js'
import type { Session } from './session.js'
import { boundedClientText } from '../util/client-text.js'
import type { RpcErrorBody } from './wire.js'

interface CompiledMethod<Services> {
  readonly def: MethodDefinition<Services, any>
  readonly validator: Validator | null
  readonly resultValidator: Validator | null
}

export interface DispatcherOptions {
  /** Check every result against its method's result schema (tests; costs time per reply). */
  readonly validateResults?: boolean
}

export type DispatchOutcome = { readonly result: unknown } | { readonly error: RpcErrorBody }

/**
 * Routes requests to their handlers. Order of checks, as codex: the method and its params
 * must parse (unknown method or bad params → -32600 `Invalid request: ...`), then the
 * connection must be initialized, then it must hold the method's scope.
 */
export class Dispatcher<Services> {
  private readonly methods = new Map<string, CompiledMethod<Services>>()
  private readonly unknownVariantTail: string

  constructor(
    definitions: readonly MethodDefinition<Services, any>[],
    private readonly services: Services,
    options: DispatcherOptions = {},
  ) {
    for (const def of definitions) {
      if (this.methods.has(def.name)) throw new Error(`duplicate method ${def.name}`)
      this.methods.set(def.name, {
        def,
        validator: def.params === null ? null : Compile(def.params as TSchema),
        resultValidator: options.validateResults && def.result ? Compile(def.result) : null,
      })
    }
    this.unknownVariantTail = `, expected one of ${[...this.methods.keys()].map((n) => '`' + n + '`').join(', ')}`
  }

  /** Whether the gateway answers `method` itself (anything else may go to the engine). */
  has(method: string): boolean {
    return this.methods.has(method)
  }

  async dispatch(session: Session, method: string, rawParams: unknown): Promise<DispatchOutcome> {
    const entry = this.methods.get(method)
    // The method is echoed as codex does, but bounded and escaped: the client chose it, and a
    // 16 MiB name must not come back whole nor a backtick break the quoting.
    if (entry === undefined) return invalid(`Invalid request: unknown variant \`${boundedClientText(method)}\`${this.unknownVariantTail}`)
    const { def, validator, resultValidator } = entry

    let params: unknown = undefined
    if (validator !== null) {
      if (rawParams === undefined || rawParams === null) return invalid('Invalid request: missing field `params`')
      if (!validator.Check(rawParams)) return invalid(`Invalid request: ${describeSchemaError(validator, rawParams)}`)
      params = rawParams
    }
    if (!session.initialized && !def.beforeInitialize) return invalid('Not initialized')
    if (!session.principal.scopes.has(def.scope)) return invalid(`method ${method} requires scope ${def.scope}`)

    try {
      const value = await def.handler(params, { session, services: this.services })
      const result = value === undefined ? {} : value
      if (resultValidator !== null && !resultValidator.Check(result)) {
        session.log.error({ method, problem: describeSchemaError(resultValidator, result, 'result') }, 'result does not match its schema')
        return { error: { code: INTERNAL_ERROR, message: 'internal error' } }
      }
      return { result }
    } catch (err) {
      if (err instanceof RpcError) return { error: err.toBody() }
      // Never the error's own text, in the reply or the log: it may carry a path, a URL or a secret.
      session.log.error({ method, error: withheldError(err) }, 'request handler failed')
      return { error: { code: INTERNAL_ERROR, message: 'internal error' } }
    }
  }
}

function invalid(message: string): DispatchOutcome {
  return { error: { code: INVALID_REQUEST, message } }
}

/** The first schema error as `at /path: message` (values the client sent are not echoed). */
function describeSchemaError(validator: Validator, value: unknown, root = 'params'): string {
  const [first] = validator.Errors(value)
  if (first === undefined) return 'invalid params'
  const where = first.instancePath === '' ? root : `${root}${first.instancePath}`
  return `${where}: ${first.message}`
}
