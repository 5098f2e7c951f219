/**
 * The text of a remote control HTTP failure (codex `preview_remote_control_response_body` and
 * `format_headers`): status, request id, cf-ray and a short body preview, so an operator can
 * find the request at the backend.
 *
 * Backend error bodies may echo what they were about (a server token, a pairing code), so the
 * preview redacts those fields before anything is shown.
 */
import { STATUS_CODES } from 'node:http'
import { byteCappedPreview } from '../util/body-preview.js'
import { isJsonObject, tryParseJson } from '../util/json.js'
import { REDACTED_FIELD_VALUE } from '../util/redaction-markers.js'
import { headerValue, requestIdOf, type HeaderSource } from '../util/response-headers.js'

/** How much of the (redacted) body the preview keeps, in UTF-8 bytes. */
export const PREVIEW_MAX_BYTES = 4096

/** The fields whose values never appear in a preview. */
export const SENSITIVE_FIELDS = ['remote_control_token', 'pairing_code', 'manual_pairing_code'] as const

/**
 * UTF-8 (lossy), trimmed, `<empty>` if nothing is left; for a JSON object the top-level
 * sensitive fields become `"<redacted>"`; then cut at 4096 bytes on a character boundary,
 * with `...` appended when cut.
 */
export function redactedBodyPreview(body: Buffer | Uint8Array | string): string {
  // Buffer#toString replaces invalid sequences with U+FFFD, like Rust's from_utf8_lossy.
  const text = typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8')
  return byteCappedPreview(text, PREVIEW_MAX_BYTES, (t) => scrubSensitiveFields(redactTopLevel(t)))
}

/**
 * `HTTP 401 Unauthorized, request-id: <id>, cf-ray: <ray>, body: <preview>` (codex's layout;
 * `<none>` for a missing header). Callers prefix what failed and where.
 */
export function describeHttpFailure(status: number, headers: HeaderSource, body: Buffer | Uint8Array | string): string {
  const reason = STATUS_CODES[status]
  return `HTTP ${status}${reason ? ` ${reason}` : ''}, ${describeRequestIds(headers)}, body: ${redactedBodyPreview(body)}`
}

/** `request-id: <id>, cf-ray: <ray>`, `<none>` for a missing header: how the backend finds a request. */
export function describeRequestIds(headers: HeaderSource): string {
  return `request-id: ${requestIdOf(headers) ?? '<none>'}, cf-ray: ${headerValue(headers, 'cf-ray') ?? '<none>'}`
}

/**
 * A parsed body with the sensitive fields replaced at any depth: what an error may keep as
 * data (loggers such as pino serialise every enumerable property of an error).
 */
export function redactJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactJson)
  if (value === null || typeof value !== 'object') return value
  const out: Record<string, unknown> = {}
  for (const [key, v] of Object.entries(value)) {
    out[key] = (SENSITIVE_FIELDS as readonly string[]).includes(key) ? REDACTED_FIELD_VALUE : redactJson(v)
  }
  return out
}

/** Codex's redaction: only a JSON object's own top-level fields, the rest re-serialised as is. */
function redactTopLevel(text: string): string {
  const object = tryParseJson(text)
  if (!isJsonObject(object)) return text
  let changed = false
  for (const field of SENSITIVE_FIELDS) {
    if (Object.prototype.hasOwnProperty.call(object, field)) {
      object[field] = REDACTED_FIELD_VALUE
      changed = true
    }
  }
  return changed ? JSON.stringify(object) : text
}

/**
 * Beyond codex: the same fields anywhere in the text (nested, in an array, in JSON cut short
 * or otherwise unparsable) are scrubbed too, because the project's rule is that these values
 * never reach an error message, whatever shape the body has.
 */
function scrubSensitiveFields(text: string): string {
  return text.replace(
    /"(remote_control_token|pairing_code|manual_pairing_code)"(\s*):(\s*)(?:"(?:[^"\\]|\\[\s\S])*"?|[^\s,}\]]+)/g,
    (_m, field: string, before: string, after: string) => `"${field}"${before}:${after}"${REDACTED_FIELD_VALUE}"`,
  )
}
