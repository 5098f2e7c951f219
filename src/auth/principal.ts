/**
 * Who a connection is and what it may do. Passing the upgrade check earns a principal;
 * each JSON-RPC method then declares the scope it needs (connection authority is not
 * execution authority).
 */

export const SCOPES = [
  'session',
  'account:read',
  'account:write',
  'remote:write',
  // What a connection may ask of the engine (src/engine/scopes.ts classifies its methods).
  'thread:read',
  'thread:write',
  'fs:read',
  'fs:write',
  'exec',
  'config:read',
  'config:write',
  // Scraping `/metrics`.
  'metrics:read',
] as const
export type Scope = (typeof SCOPES)[number]

export type PrincipalKind = 'queryToken' | 'capabilityToken' | 'signedBearerToken' | 'degraded' | 'remote'

export interface Principal {
  readonly kind: PrincipalKind
  /** JWT `sub`, when the bearer carried one (never the credential itself). */
  readonly subject: string | null
  readonly scopes: ReadonlySet<Scope>
}

const ALL: ReadonlySet<Scope> = new Set(SCOPES)
const DEGRADED: ReadonlySet<Scope> = new Set<Scope>(['session', 'account:read'])

export function fullPrincipal(kind: 'queryToken' | 'capabilityToken' | 'remote'): Principal {
  return { kind, subject: null, scopes: ALL }
}

export function degradedPrincipal(): Principal {
  return { kind: 'degraded', subject: null, scopes: DEGRADED }
}

/**
 * A JWT's space-separated `scope` claim, if present, limits the connection; unknown scopes are
 * ignored. A `scope` claim that is not a string grants nothing (fail closed).
 */
export function jwtPrincipal(scopeClaim: unknown, subject: unknown): Principal {
  const sub = typeof subject === 'string' ? subject : null
  if (scopeClaim === undefined) return { kind: 'signedBearerToken', subject: sub, scopes: ALL }
  const granted = new Set<Scope>()
  const words = typeof scopeClaim === 'string' ? scopeClaim.split(' ') : []
  for (const s of words) {
    if ((SCOPES as readonly string[]).includes(s)) granted.add(s as Scope)
  }
  return { kind: 'signedBearerToken', subject: sub, scopes: granted }
}
