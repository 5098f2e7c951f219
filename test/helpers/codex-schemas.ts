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
