/**
 * Rewrites the `id` of a JSON-RPC frame without re-serialising the rest of it: a request the
 * engine sends to a client, and the client's reply to it, travel as their senders wrote them
 * (numbers beyond 2^53, member order and spacing included); only the id's bytes change.
 *
 * Only the top-level `id` member is touched. A frame whose top level cannot be read with
 * certainty (not an object, a key written with escapes, `id` twice — a parser would take the
 * last) gets null, and the caller decides.
 */
import type { RequestId } from '../rpc/wire.js'
import { scanTopLevel } from '../util/json-scan.js'

/** `text` with its top-level `id` value replaced by `id`, or null when there is none. */
export function withFrameId(text: string, id: RequestId): string | null {
  let start = -1
  let end = -1
  let certain = true
  const read = scanTopLevel(text, (key, valueStart, valueEnd) => {
    if (key === null || (key === 'id' && start >= 0)) certain = false
    else if (key === 'id') {
      start = valueStart
      end = valueEnd
    }
    return certain
  })
  if (!read || !certain || start < 0) return null
  return text.slice(0, start) + JSON.stringify(id) + text.slice(end)
}
