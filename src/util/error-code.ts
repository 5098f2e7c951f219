/**
 * The `code` of a thrown error (`ENOENT`, `UND_ERR_SOCKET`, ...). Node and undici put it on the
 * error or on its `cause`; anything else may throw values of any shape, so nothing is assumed.
 */

/** The error's string `code`, whatever it looks like: for branching on it, not for showing it. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' ? code : undefined
}

/**
 * The code only when it has the shape of a system or undici code (upper case, digits, `_`,
 * short), so it can go into a message: a code of another shape could be any text.
 */
export function printableErrorCode(err: unknown): string | undefined {
  const code = errorCode(err)
  return code !== undefined && /^[A-Z0-9_]{1,40}$/.test(code) ? code : undefined
}
