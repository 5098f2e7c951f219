import type { Validator } from '../util/typebox.js'

/**
 * Why `value` fails `validator`, as `at /path: message` (the first problem only), or null when
 * it passes. Values are never quoted: the text may end up in a log or an error reply.
 */
export function schemaProblem(validator: Validator, value: unknown): string | null {
  if (validator.Check(value)) return null
  const [first] = validator.Errors(value)
  if (first === undefined) return 'does not match the expected shape'
  return `at ${first.instancePath === '' ? '/' : first.instancePath}: ${first.message}`
}
