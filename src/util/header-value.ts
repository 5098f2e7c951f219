/**
 * Whether text may travel in an HTTP header. Checked before sending because fetch's own
 * complaint about a bad value quotes the value, which may be a credential.
 */

// Visible ASCII plus space and tab: what undici accepts in a field value.
const VISIBLE_ASCII = /^[\t\x20-\x7e]*$/

// Controls other than tab, and DEL: the characters no header value may hold.
const HEADER_CONTROLS = /[\x00-\x08\x0a-\x1f\x7f]/g

/** Visible ASCII, space and tab only. */
export function isVisibleAscii(value: string): boolean {
  return VISIBLE_ASCII.test(value)
}

/** Visible ASCII without surrounding blanks: a value undici sends exactly as given. */
export function isSendableHeaderValue(value: string): boolean {
  return isVisibleAscii(value) && value === value.trim()
}

/** No control characters (non-ASCII is allowed): the looser rule for a value this server builds. */
export function hasNoHeaderControls(value: string): boolean {
  return value.search(HEADER_CONTROLS) < 0
}

/** Each control character replaced by `_`. */
export function replaceHeaderControls(value: string): string {
  return value.replace(HEADER_CONTROLS, '_')
}
