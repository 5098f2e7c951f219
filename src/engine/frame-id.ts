/**
 * Rewrites the `id` of a JSON-RPC frame without re-serialising the rest of it: a request the
 * engine sends to a client, and the client's reply to it, travel as their senders wrote them
 * (numbers beyond 2^53, member order and spacing included); only the id's bytes change.
 *
 * Only the top-level `id` member is touched. A frame whose top level cannot be scanned (not
 * an object, or an `id` key spelled with escapes) gets null, and the caller decides.
 */
import type { RequestId } from '../rpc/wire.js'

/** `text` with its top-level `id` value replaced by `id`, or null when there is none. */
export function withFrameId(text: string, id: RequestId): string | null {
  const span = topLevelIdSpan(text)
  if (span === null) return null
  return text.slice(0, span[0]) + JSON.stringify(id) + text.slice(span[1])
}

const WHITESPACE = new Set([' ', '\t', '\n', '\r'])

/** [start, end) of the top-level `id` member's value. */
function topLevelIdSpan(text: string): [number, number] | null {
  let i = skipWhitespace(text, 0)
  if (text[i] !== '{') return null
  i++
  for (;;) {
    i = skipWhitespace(text, i)
    if (text[i] !== '"') return null
    const keyEnd = stringEnd(text, i)
    if (keyEnd < 0) return null
    const key = text.slice(i + 1, keyEnd - 1)
    i = skipWhitespace(text, keyEnd)
    if (text[i] !== ':') return null
    const valueStart = skipWhitespace(text, i + 1)
    const valueEnd = valueEndAt(text, valueStart)
    if (valueEnd < 0) return null
    if (key === 'id') return [valueStart, valueEnd]
    i = skipWhitespace(text, valueEnd)
    if (text[i] !== ',') return null
    i++
  }
}

function skipWhitespace(text: string, i: number): number {
  while (i < text.length && WHITESPACE.has(text[i]!)) i++
  return i
}

/** Index just past the string starting at `i` (a `"`), or -1. */
function stringEnd(text: string, i: number): number {
  for (let j = i + 1; j < text.length; j++) {
    const c = text[j]
    if (c === '\\') j++
    else if (c === '"') return j + 1
  }
  return -1
}

/** Index just past the JSON value starting at `i`, or -1. */
function valueEndAt(text: string, i: number): number {
  const first = text[i]
  if (first === '"') return stringEnd(text, i)
  if (first === '{' || first === '[') {
    let depth = 0
    for (let j = i; j < text.length; j++) {
      const c = text[j]
      if (c === '"') {
        j = stringEnd(text, j) - 1
        if (j < 0) return -1
      } else if (c === '{' || c === '[') depth++
      else if (c === '}' || c === ']') {
        depth--
        if (depth === 0) return j + 1
      }
    }
    return -1
  }
  // A number, true, false or null: runs to the next delimiter.
  let j = i
  while (j < text.length && text[j] !== ',' && text[j] !== '}' && !WHITESPACE.has(text[j]!)) j++
  return j > i ? j : -1
}
