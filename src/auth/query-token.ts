/** Reads the generated connection token from the request's query string (path ignored). */

export type QueryTokenResult =
  | { kind: 'present'; token: string }
  | { kind: 'missing' }
  | { kind: 'multiple' }

export function readQueryToken(url: string): QueryTokenResult {
  const q = url.indexOf('?')
  if (q < 0) return { kind: 'missing' }
  // URLSearchParams form-decodes ('+' is a space, %XX escapes); malformed escapes stay literal.
  const hash = url.indexOf('#', q)
  const params = new URLSearchParams(url.slice(q + 1, hash < 0 ? undefined : hash))
  const values = params.getAll('token')
  if (values.length > 1) return { kind: 'multiple' }
  const [token] = values
  if (token === undefined) return { kind: 'missing' }
  return { kind: 'present', token }
}
