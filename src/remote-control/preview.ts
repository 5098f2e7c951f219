/**
 * The text of a remote control HTTP failure (remote-control.md, the error-text paragraph;
 * codex `preview_remote_control_response_body` and `format_headers`): status, request id,
 * cf-ray and a short body preview, so an operator can find the request at the backend.
 *
 * Backend error bodies may echo what they were about (a server token, a pairing code), so the
 * preview redacts those fields before anything is shown.
 */
import { STATUS_CODES } from 'node:http'

/** How much of the (redacted) body the preview keeps, in UTF-8 bytes. */
export const PREVIEW_MAX_BYTES = 4096
export const REDACTED = '<redacted>'

/** The fields whose values never appear in a preview. */
export const SENSITIVE_FIELDS = ['remote_control_token', 'pairing_code', 'manual_pairing_code'] as const

/** Response headers as fetch (`Headers`) or node's http / ws (`IncomingHttpHeaders`) give them. */
export type HeaderSource = Headers | Readonly<Record<string, string | string[] | number | undefined>>

/**
 * UTF-8 (lossy), trimmed, `<empty>` if nothing is left; for a JSON object the top-level
 * sensitive fields become `"<redacted>"`; then cut at 4096 bytes on a character boundary,
 * with `...` appended when cut.
 */
export function bodyPreview(body: Buffer | Uint8Array | string): string {
  // Buffer#toString replaces invalid sequences with U+FFFD, like Rust's from_utf8_lossy.
  const text = (typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8')).trim()
  if (text === '') return '<empty>'
  const redacted = scrubSensitiveFields(redactTopLevel(text))
  const bytes = Buffer.from(redacted, 'utf8')
  if (bytes.byteLength <= PREVIEW_MAX_BYTES) return redacted
  let cut = PREVIEW_MAX_BYTES
  // A byte 10xxxxxx continues a character: back up to the byte that starts it.
  while (cut > 0 && ((bytes[cut] ?? 0) & 0xc0) === 0x80) cut -= 1
  return `${bytes.subarray(0, cut).toString('utf8')}...`
}

/**
 * `HTTP 401 Unauthorized, request-id: <id>, cf-ray: <ray>, body: <preview>` (codex's layout;
 * `<none>` for a missing header). Callers prefix what failed and where.
 */
export function describeHttpFailure(status: number, headers: HeaderSource, body: Buffer | Uint8Array | string): string {
  const reason = STATUS_CODES[status]
  const requestId = headerValue(headers, 'x-request-id') ?? headerValue(headers, 'x-oai-request-id') ?? '<none>'
  const cfRay = headerValue(headers, 'cf-ray') ?? '<none>'
  return `HTTP ${status}${reason ? ` ${reason}` : ''}, request-id: ${requestId}, cf-ray: ${cfRay}, body: ${bodyPreview(body)}`
}

/** `x-request-id`, else `x-oai-request-id`: what the backend's operators search by. */
export function requestIdOf(headers: HeaderSource): string | null {
  return headerValue(headers, 'x-request-id') ?? headerValue(headers, 'x-oai-request-id')
}

/** One header, case-insensitively, first value if repeated; non-printable characters become `?`. */
export function headerValue(headers: HeaderSource, name: string): string | null {
  let value: string | string[] | number | undefined | null
  if (headers instanceof Headers) value = headers.get(name)
  else {
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name)
    value = key === undefined ? undefined : headers[key]
  }
  if (Array.isArray(value)) value = value[0]
  if (value === undefined || value === null) return null
  // A header value ends up in logs: no control characters that could forge log lines.
  return String(value).replace(/[^\x20-\x7e]/g, '?')
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
    out[key] = (SENSITIVE_FIELDS as readonly string[]).includes(key) ? REDACTED : redactJson(v)
  }
  return out
}

/** Codex's redaction: only a JSON object's own top-level fields, the rest re-serialised as is. */
function redactTopLevel(text: string): string {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return text
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return text
  const object = parsed as Record<string, unknown>
  let changed = false
  for (const field of SENSITIVE_FIELDS) {
    if (Object.prototype.hasOwnProperty.call(object, field)) {
      object[field] = REDACTED
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
    (_m, field: string, before: string, after: string) => `"${field}"${before}:${after}"${REDACTED}"`,
  )
}
