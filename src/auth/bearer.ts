/** `Authorization: Bearer <token>` parsing for the capability and signed-bearer modes. */
import { isVisibleAscii } from '../util/header-value.js'

export type BearerResult = { ok: true; token: string } | { ok: false; reason: string }

export function parseBearer(header: string | string[] | undefined): BearerResult {
  if (header === undefined) return { ok: false, reason: 'missing websocket bearer token' }
  // Node keeps only the first of repeated Authorization headers; the request-shape check
  // (src/auth/request-shape.ts) refuses such a request before it gets here. An array never
  // comes from Node for this header, but is refused rather than picked from.
  if (Array.isArray(header)) return { ok: false, reason: 'invalid authorization header' }
  if (!isVisibleAscii(header)) return { ok: false, reason: 'invalid authorization header' }
  const space = header.indexOf(' ')
  if (space < 0) return { ok: false, reason: 'invalid authorization header' }
  const scheme = header.slice(0, space)
  const token = header.slice(space + 1).trim()
  if (scheme.toLowerCase() !== 'bearer' || token.length === 0) return { ok: false, reason: 'invalid authorization header' }
  return { ok: true, token }
}
