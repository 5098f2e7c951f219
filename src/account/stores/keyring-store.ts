/**
 * The `keyring` store: the auth.json document, as JSON, is the password of one OS keyring entry
 * (service `app-server auth`, account derived from the home path so two homes never share one).
 *
 * The OS keyring is reached through a `KeyringBackend`; the default one is `@napi-rs/keyring`,
 * imported lazily so a missing native binary or keyring service only breaks this mode.
 */
import { resolve } from 'node:path'
import { KeyringUnavailable, StoreError, type AuthDotJson, type CredentialStore } from '../types.js'
import { parseAuthText } from '../auth-document.js'
import { sha256 } from '../../util/sha256.js'

export const KEYRING_SERVICE = 'app-server auth'

/** How long one keyring call may take: a keyring waiting on an unlock prompt would hang forever. */
const KEYRING_TIMEOUT_MS = 10_000

/** One password per service+account. Every method rejects when no keyring is reachable. */
export interface KeyringBackend {
  /** The stored password, or null when there is none. */
  get(service: string, account: string): Promise<string | null>
  set(service: string, account: string, password: string): Promise<void>
  /** Removes the entry; resolves when there was none. */
  delete(service: string, account: string): Promise<void>
}

/** `home-` + the first 16 hex digits of SHA-256 of the absolute home path. */
export function keyringAccount(home: string): string {
  return 'home-' + sha256(resolve(home)).toString('hex').slice(0, 16)
}

export class KeyringStore implements CredentialStore {
  readonly mode = 'keyring' as const
  readonly account: string

  constructor(
    home: string,
    private readonly backend: KeyringBackend = napiKeyringBackend(),
  ) {
    this.account = keyringAccount(home)
  }

  async load(): Promise<AuthDotJson | null> {
    let text: string | null
    try {
      text = await this.backend.get(KEYRING_SERVICE, this.account)
    } catch (err) {
      throw unavailable(err)
    }
    return text === null ? null : parseAuthText(text, 'keyring entry')
  }

  async save(auth: AuthDotJson): Promise<void> {
    try {
      await this.backend.set(KEYRING_SERVICE, this.account, JSON.stringify(auth))
    } catch (err) {
      throw unavailable(err, secretsOf(auth))
    }
  }

  async clear(): Promise<void> {
    try {
      await this.backend.delete(KEYRING_SERVICE, this.account)
    } catch (err) {
      throw unavailable(err)
    }
  }
}

function secretsOf(auth: AuthDotJson): string[] {
  const t = auth.tokens
  return [auth.OPENAI_API_KEY, t?.id_token, t?.access_token, t?.refresh_token].filter((s): s is string => typeof s === 'string' && s.length > 0)
}

/**
 * `keyring unavailable: <reason>`, the reason being the first line of the backend's message,
 * shortened. Native keyring errors name what failed, not the data; should one ever quote a
 * secret being stored, the reason is withheld.
 */
function unavailable(err: unknown, secrets: readonly string[] = []): StoreError {
  if (err instanceof StoreError) return err
  const raw = err instanceof Error ? err.message : 'unknown error'
  let reason = (raw.split('\n')[0] ?? '').replace(/\s+/g, ' ').trim().slice(0, 200) || 'unknown error'
  if (secrets.some((s) => raw.includes(s))) reason = 'keyring error (details withheld)'
  return new KeyringUnavailable(`keyring unavailable: ${reason}`)
}

type NapiKeyring = typeof import('@napi-rs/keyring')
let napiModule: Promise<NapiKeyring> | undefined

function loadNapi(): Promise<NapiKeyring> {
  napiModule ??= import('@napi-rs/keyring').catch(() => {
    napiModule = undefined
    throw new KeyringUnavailable('keyring unavailable: the @napi-rs/keyring native module could not be loaded')
  })
  return napiModule
}

/**
 * The OS keyring through `@napi-rs/keyring` (keyring-rs). On Linux it would fall back silently
 * from the Secret Service to the kernel keyutils keyring, which lives in kernel memory and is
 * lost on reboot, so entries are pinned to the Secret Service: credentials survive a restart,
 * and where no Secret Service runs this mode fails clearly (and `auto` uses the file).
 */
export function napiKeyringBackend(): KeyringBackend {
  async function entry(service: string, account: string) {
    const { AsyncEntry } = await loadNapi()
    // The constructor itself throws when the pinned store is unreachable.
    return process.platform === 'linux' ? new AsyncEntry(service, account, { linux: { store: 'secret-service' } }) : new AsyncEntry(service, account)
  }
  async function timed<T>(op: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const signal = AbortSignal.timeout(KEYRING_TIMEOUT_MS)
    try {
      return await op(signal)
    } catch (err) {
      if (signal.aborted) throw new Error(`no answer from the keyring within ${KEYRING_TIMEOUT_MS / 1000} s`)
      throw err
    }
  }
  return {
    async get(service, account) {
      const e = await entry(service, account)
      return timed((signal) => e.getPassword(signal))
    },
    async set(service, account, password) {
      const e = await entry(service, account)
      await timed((signal) => e.setPassword(password, signal))
    },
    async delete(service, account) {
      const e = await entry(service, account)
      await timed((signal) => e.deletePassword(signal))
    },
  }
}
