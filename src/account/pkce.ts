/**
 * PKCE (RFC 7636, S256) and the OAuth `state` for the browser login, sized as codex sizes
 * them: a 64-byte verifier and a 32-byte state, both base64url without padding.
 */
import { createHash, randomBytes } from 'node:crypto'

export interface PkceCodes {
  readonly codeVerifier: string
  readonly codeChallenge: string
}

export function createPkce(): PkceCodes {
  const codeVerifier = randomBytes(64).toString('base64url')
  return { codeVerifier, codeChallenge: s256Challenge(codeVerifier) }
}

/** BASE64URL(SHA-256(ASCII(verifier))), the `S256` method. */
export function s256Challenge(codeVerifier: string): string {
  return createHash('sha256').update(codeVerifier, 'ascii').digest('base64url')
}

export function createState(): string {
  return randomBytes(32).toString('base64url')
}
