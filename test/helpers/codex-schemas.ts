/** Validators for the codex 0.169.0 JSON Schemas kept in test/fixtures (see its README). */
import { readFileSync } from 'node:fs'
import { Ajv, type ValidateFunction } from 'ajv'

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false })
const cache = new Map<string, ValidateFunction>()

/** `name` is a path below test/fixtures/codex-0.169.0 without `.json`, e.g. `v1/InitializeResponse`. */
export function codexValidator(name: string): ValidateFunction {
  let v = cache.get(name)
  if (v === undefined) {
    const url = new URL(`../../../test/fixtures/codex-0.169.0/${name}.json`, import.meta.url)
    const schema = JSON.parse(readFileSync(url, 'utf8')) as Record<string, unknown>
    delete schema.$schema
    v = ajv.compile(schema)
    cache.set(name, v)
  }
  return v
}

/** Returns the validation errors as text, or '' when `value` is valid. */
export function codexErrors(name: string, value: unknown): string {
  const v = codexValidator(name)
  return v(value) ? '' : ajv.errorsText(v.errors)
}

/** Which codex schema each payload is checked against, by method (paths as for `codexErrors`). */
export interface FrameSchemas {
  readonly results: Readonly<Record<string, string>>
  readonly notifications: Readonly<Record<string, string>>
  /** Server→client requests a test expects; any other is a problem. */
  readonly serverRequests?: Readonly<Record<string, string>>
}

/**
 * Every frame a client received, against codex's envelope schema and its payload's schema.
 * `methodOf(id)` names the method a result answers. Returns the problems (empty when all match).
 */
export function frameProblems(
  frames: readonly Record<string, unknown>[],
  methodOf: (id: unknown) => string | undefined,
  schemas: FrameSchemas,
  where: string,
): string[] {
  const problems: string[] = []
  const payload = (kind: string, method: string, schema: string | undefined, value: unknown) => {
    if (schema === undefined) problems.push(`${where}: unexpected ${kind} ${method}`)
    else {
      const e = codexErrors(schema, value)
      if (e) problems.push(`${where}: ${method} ${kind} vs ${schema}: ${e}`)
    }
  }
  for (const m of frames) {
    const envelope = 'id' in m ? ('result' in m ? 'JSONRPCResponse' : 'error' in m ? 'JSONRPCError' : 'JSONRPCRequest') : 'JSONRPCNotification'
    const env = codexErrors(envelope, m)
    if (env) problems.push(`${where}: ${envelope} envelope: ${env}`)
    if (envelope === 'JSONRPCResponse') {
      const method = methodOf(m.id)
      payload('result', String(method), method === undefined ? undefined : schemas.results[method], m.result)
    } else if (envelope === 'JSONRPCRequest') {
      payload('server request', String(m.method), schemas.serverRequests?.[String(m.method)], m.params)
    } else if (envelope === 'JSONRPCNotification') {
      payload('notification', String(m.method), schemas.notifications[String(m.method)], m.params)
    }
  }
  return problems
}
