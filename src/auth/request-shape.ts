/**
 * Requests that two parsers could read two ways are refused before anything else looks at
 * them, instead of being resolved by "first one wins" (Node keeps the first `Host` and the
 * first `Authorization` of a pair; a proxy in front may keep the last).
 *
 * Checked in this order, each a 400:
 * 1. more than one `Host` header;
 * 2. more than one `Authorization` header;
 * 3. an asterisk-form target (`*`, `*?token=…`): only `OPTIONS *` means anything, and not here;
 * 4. a target carrying a fragment (`#`): a client never sends one, and what follows it would be
 *    read as a query by some parsers and dropped by others;
 * 5. an absolute-form target (`http://a/…`, `ws://a/…`) whose authority differs from `Host`:
 *    the one the Host check looked at must be the one the request names.
 */
export type ShapeVerdict = { ok: true } | { ok: false; reason: string }

export function checkRequestShape(rawHeaders: readonly string[], target: string, host: string | undefined): ShapeVerdict {
  let hosts = 0
  let authorizations = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase()
    if (name === 'host') hosts++
    else if (name === 'authorization') authorizations++
  }
  if (hosts > 1) return { ok: false, reason: 'duplicate host header' }
  if (authorizations > 1) return { ok: false, reason: 'duplicate authorization header' }
  if (target.startsWith('*')) return { ok: false, reason: 'asterisk-form target' }
  if (target.includes('#')) return { ok: false, reason: 'fragment in target' }
  if (!target.startsWith('/')) {
    const authority = absoluteFormAuthority(target)
    if (authority === null || host === undefined || authority !== host.toLowerCase()) return { ok: false, reason: 'target authority differs from host' }
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
