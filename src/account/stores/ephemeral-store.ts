/**
 * The `ephemeral` store: process memory only, gone when the process exits. Copies on the way
 * in and out, so a caller mutating what it saved or loaded cannot change what is stored.
 */
import type { AuthDotJson, CredentialStore } from '../types.js'

export class EphemeralStore implements CredentialStore {
  readonly mode = 'ephemeral' as const
  private stored: AuthDotJson | null = null

  async load(): Promise<AuthDotJson | null> {
    return this.stored === null ? null : structuredClone(this.stored)
  }

  async save(auth: AuthDotJson): Promise<void> {
    this.stored = structuredClone(auth)
  }

  async clear(): Promise<void> {
    this.stored = null
  }
}
