/** `Authorization: Bearer <token>` parsing for the capability and signed-bearer modes. */

export type BearerResult = { ok: true; token: string } | { ok: false; reason: string }

// Visible ASCII plus space and tab (what an HTTP header value may hold): no controls, no non-ASCII.
const VISIBLE_ASCII = /^[\t\x20-\x7e]*$/

export function parseBearer(header: string | string[] | undefined): BearerResult {
  if (header === undefined) return { ok: false, reason: 'missing websocket bearer token' }
  // Node joins repeated Authorization headers with ", "; an array never reaches here for it,
  // but refuse one defensively rather than pick an entry.
  if (Array.isArray(header)) return { ok: false, reason: 'invalid authorization header' }
  if (!VISIBLE_ASCII.test(header)) return { ok: false, reason: 'invalid authorization header' }
  const space = header.indexOf(' ')
  if (space < 0) return { ok: false, reason: 'invalid authorization header' }
  const scheme = header.slice(0, space)
  const token = header.slice(space + 1).trim()
  if (scheme.toLowerCase() !== 'bearer' || token.length === 0) return { ok: false, reason: 'invalid authorization header' }
  return { ok: true, token }
}
