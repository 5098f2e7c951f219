/** Signs test JWTs with `jose` (HS256 by default) and registers each as a canary. */
import { SignJWT, base64url } from 'jose'
import { registerCanary } from './canary.js'

export async function signJwt(
  secret: string,
  claims: Record<string, unknown>,
  header: Record<string, unknown> = {},
): Promise<string> {
  const jwt = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT', ...header }).sign(new TextEncoder().encode(secret))
  return registerCanary(jwt)
}

/** An unsigned token with `alg: none`. */
export function unsignedJwt(claims: Record<string, unknown>): string {
  const enc = (v: unknown) => base64url.encode(JSON.stringify(v))
  return registerCanary(`${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.`)
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000)
}
