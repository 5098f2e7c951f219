/**
 * Last-line scrubbing for text that may quote a request: every query value and every bearer
 * credential is replaced. The structured serializers already avoid secrets; this catches
 * framework messages that embed a raw URL (e.g. "Reply was already sent ... /?token=...").
 */
import { REDACTED } from '../util/redaction-markers.js'

// A value runs to the next `&`, `#` or whitespace: quotes and angle brackets are legal in a
// request target, so they must not end the redaction early.
const QUERY_VALUE = /([?&;][^=&#\s"'<>]*=)[^&#\s]*/g
const BEARER = /(\bbearer\s+)[^\s"',;]+/gi

export function scrubText(text: string): string {
  if (!text.includes('=') && !/bearer/i.test(text)) return text
  return text.replace(QUERY_VALUE, `$1${REDACTED}`).replace(BEARER, `$1${REDACTED}`)
}

/** A request target with its query values removed, keys kept: `/x?token=[redacted]`. */
export function redactUrl(url: string | undefined): string | undefined {
  if (url === undefined) return undefined
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q) + scrubText(url.slice(q))
}

/** An error's message short enough for a client or a log line, without anything that looks like a credential. */
export function shortReason(err: unknown): string {
  const message = err instanceof Error ? err.message : typeof err === 'string' ? err : 'unknown error'
  return scrubText(message).slice(0, 300)
}
