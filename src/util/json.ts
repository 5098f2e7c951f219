/**
 * Parsing untrusted JSON text. A SyntaxError's message quotes the text (which may hold a
 * secret), so failures are reported as values, never as the parser's error.
 */

export type JsonObject = Record<string, unknown>

/** The parsed value, or `undefined` when the text is not JSON (JSON itself never yields `undefined`). */
export function tryParseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/** A JSON object: not null, not an array. */
export function isJsonObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** The text's object, or null when it is not JSON or not an object. */
export function parseJsonObject(text: string): JsonObject | null {
  const value = tryParseJson(text)
  return isJsonObject(value) ? value : null
}
