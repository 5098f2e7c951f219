/**
 * How the upstream routes most engine frames without parsing them: a notification needs only
 * its `method`, a result only its `id`. Both are read from the frame's top-level members (see
 * json-scan.ts); the values around them, `params` and `result` above all (the bulk of every
 * frame), are skipped, not parsed.
 *
 * A head is given only when the frame's top level says, with certainty, what `parseIncoming`
 * would: every key written without escapes, none of `id`, `method`, `result`, `error` twice (a
 * parser takes the last), a `method` that is a plain string, an `id` that is a plain string
 * or a safe integer. Anything else — requests and error replies too, which are rare and need
 * their members — gets null, and the caller parses the frame in full.
 */
import type { RequestId } from '../rpc/wire.js'
import { plainString, scanTopLevel } from '../util/json-scan.js'

export type FrameHead = { readonly kind: 'notification'; readonly method: string } | { readonly kind: 'response'; readonly id: RequestId }

const INTEGER = /^-?(?:0|[1-9][0-9]*)$/

/** The frame's head, or null when only a full parse can tell. */
export function frameHead(text: string): FrameHead | null {
  let method: string | null = null
  let methodSeen = false
  let idStart = -1
  let idEnd = -1
  let results = 0
  let errors = 0
  let certain = true
  const read = scanTopLevel(text, (key, start, end) => {
    switch (key) {
      case null:
        certain = false
        break
      case 'method':
        if (methodSeen) certain = false
        methodSeen = true
        method = plainString(text, start, end)
        if (method === null) certain = false
        break
      case 'id':
        if (idStart >= 0) certain = false
        idStart = start
        idEnd = end
        break
      case 'result':
        results++
        break
      case 'error':
        errors++
        break
    }
    return certain
  })
  if (!read || !certain) return null
  if (method !== null) return idStart < 0 ? { kind: 'notification', method } : null
  if (idStart < 0 || results !== 1 || errors !== 0) return null
  const id = requestId(text, idStart, idEnd)
  return id === null ? null : { kind: 'response', id }
}

function requestId(text: string, start: number, end: number): RequestId | null {
  const asString = plainString(text, start, end)
  if (asString !== null) return asString
  const digits = text.slice(start, end)
  if (!INTEGER.test(digits)) return null
  const n = Number(digits)
  return Number.isSafeInteger(n) ? n : null
}
