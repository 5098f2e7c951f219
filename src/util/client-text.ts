/**
 * A value the client chose (a request id, a method name), made fit to write into a log line
 * or to echo in an error message: at most `max` characters, with control characters, line and
 * paragraph separators, lone surrogates and backticks escaped as `\xNN` / `\uNNNN`, and a
 * marker saying how much was cut. A client picks these freely — a 16 MiB frame can hold a
 * 16 MiB id — so none of it may be copied whole, and none of it may break a line or the
 * backtick quoting of codex's error messages.
 *
 * An ordinary value (short, printable, no backtick) comes back as it is, so messages keep
 * codex's exact wording.
 */

/** How many characters of a client-chosen value are kept. */
export const CLIENT_TEXT_MAX = 64

const NEEDS_ESCAPE = /[\x00-\x1f\x7f-\x9f`\u2028\u2029\ud800-\udfff]/

function escapeCodePoint(cp: number): string {
  return cp < 0x100 ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`
}

function needsEscape(cp: number): boolean {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp === 0x60 || cp === 0x2028 || cp === 0x2029 || (cp >= 0xd800 && cp <= 0xdfff)
}

/** `value` capped at `max` characters (escapes included) and escaped; see the header. */
export function boundedClientText(value: string, max: number = CLIENT_TEXT_MAX): string {
  if (value.length <= max && !NEEDS_ESCAPE.test(value)) return value
  let out = ''
  let i = 0
  while (i < value.length) {
    // A valid surrogate pair is one code point above 0xffff; a lone surrogate is escaped.
    const cp = value.codePointAt(i) as number
    const width = cp > 0xffff ? 2 : 1
    const piece = needsEscape(cp) ? escapeCodePoint(cp) : value.slice(i, i + width)
    if (out.length + piece.length > max) break
    out += piece
    i += width
  }
  return i < value.length ? `${out}…(+${value.length - i} chars)` : out
}

/** A JSON-RPC id as it may be logged: a number as it is, a string bounded, anything else null. */
export function loggableId(id: unknown): string | number | null {
  if (typeof id === 'number') return id
  if (typeof id === 'string') return boundedClientText(id)
  return null
}
