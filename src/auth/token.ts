import { randomBytes, timingSafeEqual } from 'node:crypto'
import { sha256 } from '../util/sha256.js'

/** A fresh connection token: 32 bytes from the OS CSPRNG, base64url without padding (43 chars). */
export function generateConnectionToken(): string {
  return randomBytes(32).toString('base64url')
}

/**
 * Constant-time check of a presented secret against the SHA-256 digest of the expected one.
 * Hashing first makes both sides the same length, so neither content nor length leaks.
 */
export function matchesDigest(presented: string, expectedSha256: Buffer): boolean {
  return timingSafeEqual(sha256(presented), expectedSha256)
}
