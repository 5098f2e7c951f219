/**
 * What a re-read of the credential store means for the credential in memory, when another
 * process (a CLI `login` or `logout` in the same home) may have changed it.
 *
 * The store is compared with memory by credential, not by file bytes, so the same login written
 * twice (or with another `last_refresh`) is no change. This process's own writes are never news:
 * `OwnWrites` wraps the store and remembers the credential of the last document this process
 * saved or cleared, noted *before* the write starts — a re-read that lands between a login's
 * save and the moment the login takes the credential in memory sees its own write and leaves it
 * to the login (no echo, whichever order the two finish in).
 */
import { credentialFromDocument } from './auth-document.js'
import type { AuthDotJson, Credential, CredentialStore } from './types.js'

/** Same login, same secrets: the fields that decide what a credential can do. */
export function sameCredential(a: Credential | null, b: Credential | null): boolean {
  if (a === null || b === null) return a === b
  if (a.kind === 'apiKey') return b.kind === 'apiKey' && a.apiKey === b.apiKey
  if (a.kind === 'chatgptManaged') {
    if (b.kind !== 'chatgptManaged') return false
    const x = a.tokens
    const y = b.tokens
    return x.idToken === y.idToken && x.accessToken === y.accessToken && x.refreshToken === y.refreshToken && x.accountId === y.accountId
  }
  return b.kind === 'chatgptExternal' && a.accessToken === b.accessToken && a.accountId === b.accountId && a.planType === b.planType
}

/** The store, remembering what this process last wrote to it. */
export class OwnWrites implements CredentialStore {
  /** undefined: nothing written since memory last caught up with the store. */
  private lastWritten: Credential | null | undefined = undefined

  constructor(private readonly inner: CredentialStore) {}

  get mode(): CredentialStore['mode'] {
    return this.inner.mode
  }

  load(): Promise<AuthDotJson | null> {
    return this.inner.load()
  }

  save(auth: AuthDotJson): Promise<void> {
    return this.writing(credentialFromDocument(auth), () => this.inner.save(auth))
  }

  clear(): Promise<void> {
    return this.writing(null, () => this.inner.clear())
  }

  /** True when `stored` is what this process itself last wrote. */
  isOwnWrite(stored: Credential | null): boolean {
    return this.lastWritten !== undefined && sameCredential(this.lastWritten, stored)
  }

  /** Memory now holds what the store holds: an old own write must not hide a later identical one from another process. */
  caughtUp(): void {
    this.lastWritten = undefined
  }

  private async writing(next: Credential | null, write: () => Promise<void>): Promise<void> {
    const before = this.lastWritten
    this.lastWritten = next
    try {
      await write()
    } catch (err) {
      // Nothing was written: what was last written before stays the own write to recognise.
      if (this.lastWritten === next) this.lastWritten = before
      throw err
    }
  }
}
