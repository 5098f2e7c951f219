/**
 * The `auto` store: the OS keyring when it works, `auth.json` when it does not. Only store
 * errors are logged, and their messages never hold a secret (see `StoreError`).
 */
import { storeFailureFields, type AuthDotJson, type CredentialStore, type StoreLog } from '../types.js'
import type { FileStore } from './file-store.js'
import type { KeyringStore } from './keyring-store.js'

export type { StoreLog } from '../types.js'

export class AutoStore implements CredentialStore {
  readonly mode = 'auto' as const

  constructor(
    private readonly keyring: KeyringStore,
    private readonly file: FileStore,
    private readonly log?: StoreLog,
  ) {}

  /** The keyring entry, else the file (a login saved while the keyring was unreachable). */
  async load(): Promise<AuthDotJson | null> {
    try {
      const fromKeyring = await this.keyring.load()
      if (fromKeyring !== null) return fromKeyring
    } catch (err) {
      this.warn(err, 'keyring unreadable; loading auth.json instead')
    }
    return this.file.load()
  }

  async save(auth: AuthDotJson): Promise<void> {
    try {
      await this.keyring.save(auth)
    } catch (err) {
      this.warn(err, 'keyring unusable; saving auth.json instead')
      await this.file.save(auth)
      return
    }
    // Saved in the keyring: an older plaintext copy must neither linger on disk nor shadow it later.
    await this.file.clear().catch((err: unknown) => this.warn(err, 'could not remove the older auth.json'))
  }

  /** Clears both; an unreachable keyring holds nothing this process could remove. */
  async clear(): Promise<void> {
    await this.keyring.clear().catch((err: unknown) => this.warn(err, 'keyring unusable while clearing; clearing auth.json only'))
    await this.file.clear()
  }

  /** A login saved while the keyring was unreachable may have left temp files of the file store. */
  removeLeftovers(): Promise<void> {
    return this.file.removeLeftovers()
  }

  private warn(err: unknown, msg: string): void {
    // A StoreError is written secret-free; anything else is reported by type only.
    this.log?.warn({ store: 'auto', ...storeFailureFields(err) }, msg)
  }
}
