/**
 * Requests that two parsers could read two ways are refused before anything else looks at
 * them, instead of being resolved by "first one wins" (Node keeps the first `Host` and the
 * first `Authorization` of a pair; a proxy in front may keep the last).
 *
 * Checked in this order, each a 400 but the first:
 * 0. `MAX_HEADER_FIELDS` header fields or more: 431. Node keeps only about that many (the app
 *    sets the server's count to it) and drops the rest without a word, so a second `Host`, a
 *    second `Authorization` or an `Origin` after the filler would pass every check unseen;
 * 1. more than one `Host` header;
 * 2. more than one `Authorization` header;
 * 3. an asterisk-form target (`*`, `*?token=…`): only `OPTIONS *` means anything, and not here;
 * 4. a target carrying a fragment (`#`): a client never sends one, and what follows it would be
 *    read as a query by some parsers and dropped by others;
 * 5. an absolute-form target (`http://a/…`, `ws://a/…`) whose authority differs from `Host`:
 *    the one the Host check looked at must be the one the request names.
 */
export type ShapeVerdict = { ok: true } | { ok: false; status: 400 | 431; reason: string }

/** Header fields a request may carry: a client sends a dozen or two; far more is an attack. */
export const MAX_HEADER_FIELDS = 200

export function checkRequestShape(rawHeaders: readonly string[], target: string, host: string | undefined): ShapeVerdict {
  if (rawHeaders.length / 2 >= MAX_HEADER_FIELDS) return { ok: false, status: 431, reason: 'too many header fields' }
  let hosts = 0
  let authorizations = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase()
    if (name === 'host') hosts++
    else if (name === 'authorization') authorizations++
  }
  if (hosts > 1) return { ok: false, status: 400, reason: 'duplicate host header' }
  if (authorizations > 1) return { ok: false, status: 400, reason: 'duplicate authorization header' }
  if (target.startsWith('*')) return { ok: false, status: 400, reason: 'asterisk-form target' }
  if (target.includes('#')) return { ok: false, status: 400, reason: 'fragment in target' }
  if (!target.startsWith('/')) {
    const authority = absoluteFormAuthority(target)
    if (authority === null || host === undefined || authority !== host.toLowerCase()) return { ok: false, status: 400, reason: 'target authority differs from host' }
  }
  return { ok: true }
}

/** `scheme://authority/…` → the authority, lower-cased; null when the target is not of that form. */
function absoluteFormAuthority(target: string): string | null {
  const match = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(target)
  if (match === null) return null
  const authority = match[1]!
  // userinfo in a request target is never legitimate, and it hides the real host.
  if (authority.includes('@')) return null
  return authority.toLowerCase()
}
