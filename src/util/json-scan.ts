/**
 * Reads the top level of a JSON object without parsing its values: each member's key and where
 * its value starts and ends. Values are skipped by matching brackets outside strings; they are
 * not checked, so this is for text a trusted writer produced (the engine's frames, or a frame
 * `JSON.parse` has already accepted). Anything it cannot read with certainty — not an object,
 * a stray character between members, text after the closing brace, an unterminated string —
 * makes `scanTopLevel` return false, and the caller parses in full or gives up.
 */

/**
 * A member's key (null when it is written with escapes), its value's [start, end), and the
 * key's own [start, end) with its quotes, for a caller that needs an escaped key. Return false to stop.
 */
export type MemberVisitor = (key: string | null, valueStart: number, valueEnd: number, keyStart: number, keyEnd: number) => boolean

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const COLON = 0x3a
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d

/**
 * Calls `visit` for each top-level member of the object `text`, in order. True when the object
 * was read to its end (or `visit` stopped early); false when `text` is no object this can read.
 */
export function scanTopLevel(text: string, visit: MemberVisitor): boolean {
  let i = skipWhitespace(text, 0)
  if (text.charCodeAt(i) !== OPEN_BRACE) return false
  i = skipWhitespace(text, i + 1)
  if (text.charCodeAt(i) === CLOSE_BRACE) return skipWhitespace(text, i + 1) === text.length
  for (;;) {
    if (text.charCodeAt(i) !== QUOTE) return false
    const keyStart = i
    const keyEnd = stringEnd(text, i)
    if (keyEnd < 0) return false
    const key = hasEscape(text, i + 1, keyEnd - 1) ? null : text.slice(i + 1, keyEnd - 1)
    i = skipWhitespace(text, keyEnd)
    if (text.charCodeAt(i) !== COLON) return false
    const valueStart = skipWhitespace(text, i + 1)
    const valueEnd = valueEndAt(text, valueStart)
    if (valueEnd < 0) return false
    if (!visit(key, valueStart, valueEnd, keyStart, keyEnd)) return true
    i = skipWhitespace(text, valueEnd)
    const c = text.charCodeAt(i)
    if (c === CLOSE_BRACE) return skipWhitespace(text, i + 1) === text.length
    if (c !== COMMA) return false
    i = skipWhitespace(text, i + 1)
  }
}

/** Where a top-level member's value lies in the text: [start, end). */
export interface MemberSpan {
  readonly start: number
  readonly end: number
}

/**
 * `JSON.parse` keeps the last of two equal keys; a verifier that must not be told two things at
 * once needs to know there were two. For the text of an object `JSON.parse` has accepted: each
 * top-level key (unescaped) with its value's span, or null when two keys are equal once
 * unescaped (`"a"` and `"\u0061"`), or when the text cannot be read here (a verifier refuses
 * what it cannot check).
 */
export function distinctTopLevelMembers(objectText: string): ReadonlyMap<string, MemberSpan> | null {
  const members = new Map<string, MemberSpan>()
  let duplicate = false
  const read = scanTopLevel(objectText, (key, start, end, keyStart, keyEnd) => {
    const name = key ?? (JSON.parse(objectText.slice(keyStart, keyEnd)) as string)
    duplicate = members.has(name)
    members.set(name, { start, end })
    return !duplicate
  })
  return duplicate || !read ? null : members
}

/** True when two top-level keys of `objectText` are equal once unescaped, or it cannot be read (see above). */
export function hasDuplicateTopLevelKey(objectText: string): boolean {
  return distinctTopLevelMembers(objectText) === null
}

/** The string value at [start, end) without its quotes, or null when it is no string or holds escapes. */
export function plainString(text: string, start: number, end: number): string | null {
  if (text.charCodeAt(start) !== QUOTE || hasEscape(text, start + 1, end - 1)) return null
  return text.slice(start + 1, end - 1)
}

function hasEscape(text: string, start: number, end: number): boolean {
  const at = text.indexOf('\\', start)
  return at >= 0 && at < end
}

function isWhitespace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d
}

function skipWhitespace(text: string, i: number): number {
  while (i < text.length && isWhitespace(text.charCodeAt(i))) i++
  return i
}

/** Index just past the string starting at `i` (a `"`), or -1. */
function stringEnd(text: string, i: number): number {
  for (let j = i + 1; j < text.length; j++) {
    const c = text.charCodeAt(j)
    if (c === BACKSLASH) j++
    else if (c === QUOTE) return j + 1
  }
  return -1
}

/** Index just past the JSON value starting at `i`, or -1. */
function valueEndAt(text: string, i: number): number {
  const first = text.charCodeAt(i)
  if (first === QUOTE) return stringEnd(text, i)
  if (first === OPEN_BRACE || first === OPEN_BRACKET) {
    let depth = 0
    for (let j = i; j < text.length; j++) {
      const c = text.charCodeAt(j)
      if (c === QUOTE) {
        const end = stringEnd(text, j)
        if (end < 0) return -1
        j = end - 1
      } else if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++
      else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        depth--
        if (depth === 0) return j + 1
      }
    }
    return -1
  }
  // A number, true, false or null: runs to the next delimiter.
  let j = i
  while (j < text.length) {
    const c = text.charCodeAt(j)
    if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || isWhitespace(c)) break
    j++
  }
  return j > i ? j : -1
}
