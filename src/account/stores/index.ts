/** Builds the credential store for a `credentialsStore` mode. */
import type { Clock } from '../../clock.js'
import type { CredentialStore, CredentialsStoreMode, StoreLog } from '../types.js'
import { AutoStore } from './auto-store.js'
import { EphemeralStore } from './ephemeral-store.js'
import { FileStore } from './file-store.js'
import { KeyringStore, napiKeyringBackend, type KeyringBackend } from './keyring-store.js'

export { AutoStore, type StoreLog } from './auto-store.js'
export { EphemeralStore } from './ephemeral-store.js'
export { FileStore, withFileLock, type FileLockOptions, type FileStoreOptions } from './file-store.js'
export { KEYRING_SERVICE, KeyringStore, keyringAccount, napiKeyringBackend, type KeyringBackend } from './keyring-store.js'

export interface CreateStoreOptions {
  /** The OS keyring to use (tests inject one); default `@napi-rs/keyring`. */
  readonly keyring?: KeyringBackend
  /** Where `auto` reports falling back to the file, and the file store what it cleaned up. */
  readonly log?: StoreLog
  /** Judges the file store's leftovers' age; default the system clock. */
  readonly clock?: Pick<Clock, 'wallMs'>
}

export function createStore(mode: CredentialsStoreMode, home: string, options: CreateStoreOptions = {}): CredentialStore {
  switch (mode) {
    case 'file':
      return new FileStore(home, options)
    case 'ephemeral':
      return new EphemeralStore()
    case 'keyring':
      return new KeyringStore(home, options.keyring ?? napiKeyringBackend())
    case 'auto':
      return new AutoStore(new KeyringStore(home, options.keyring ?? napiKeyringBackend()), new FileStore(home, options), options.log)
  }
}
