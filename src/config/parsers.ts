/**
 * How one setting's text becomes its typed value: the parsers the flag table names. Each
 * refuses with a `ConfigError` whose wording users and tests rely on; a value echoed back goes
 * through `shown` first. Rules that span several settings (auth modes) live in `load.ts`.
 */
import { isIP } from 'node:net'
import { homedir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import { ConfigError, shown } from './errors.js'
import { parseListenUrl } from './listen.js'
import { LOG_LEVELS, type ListenAddress, type LogLevel } from './types.js'

export function parseListen(text: string): ListenAddress {
  const listen = parseListenUrl(text)
  if (!listen) throw new ConfigError(`invalid websocket --listen URL \`${shown(text)}\`; expected \`ws://IP:PORT\``)
  return listen
}

/** Digits only (no sign, exponent or fraction), within the flag's bounds. */
export function parseInteger(text: string, flag: string, min: number, max: number): number {
  const t = text.trim()
  const n = /^\d{1,12}$/.test(t) ? Number(t) : NaN
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`invalid value for --${flag}: expected an integer from ${min} to ${max}`)
  }
  return n
}

/** An environment switch: the usual spellings of yes and no; blank is no. */
export function parseSwitch(text: string, envName: string): boolean {
  const v = text.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(v)) return true
  if (['', '0', 'false', 'no', 'off'].includes(v)) return false
  throw new ConfigError(`${envName} must be true or false`)
}

export function parseAbsolutePath(text: string, flag: string): string {
  if (!isAbsolute(text)) throw new ConfigError(`--${flag} must be an absolute path`)
  return text
}

/** Trimmed; blank means "not checked". */
export function parseBlankAsNull(text: string): string | null {
  const t = text.trim()
  return t ? t : null
}

export function parseLogLevel(text: string): LogLevel {
  const v = text.trim().toLowerCase()
  if ((LOG_LEVELS as readonly string[]).includes(v)) return v as LogLevel
  throw new ConfigError(`invalid value for --log-level: expected one of ${LOG_LEVELS.join(', ')}`)
}

/** `~` and `~/…` are the user's home; anything else resolves against the working directory. */
export function parseHome(text: string): string {
  const v = text.trim()
  if (v === '') return join(homedir(), '.app-server')
  if (v === '~' || v.startsWith('~/')) return join(homedir(), v.slice(1))
  return resolve(v)
}

/** One of `choices`, trimmed; the refusal names the flag with its value name, as clap does. */
export function oneOf<const C extends string>(choices: readonly C[], spelled: string): (text: string, flag: string, valueName?: string) => C {
  return (text, flag, valueName) => {
    const v = text.trim()
    if ((choices as readonly string[]).includes(v)) return v as C
    throw new ConfigError(`invalid value '${shown(v)}' for '--${flag} <${valueName ?? 'VALUE'}>': expected ${spelled}`)
  }
}

export function parseOrigin(value: string): string {
  let origin: string | null = null
  try {
    const url = new URL(value)
    if ((url.protocol === 'http:' || url.protocol === 'https:') && url.origin === value) origin = value
  } catch {
    origin = null
  }
  if (origin === null) throw new ConfigError(`invalid --allow-origin \`${shown(value)}\`; expected an exact origin scheme://host[:port]`)
  return origin
}

export function parseClientId(text: string): string {
  const clientId = text.trim()
  if (!/^[\x21-\x7e]{1,200}$/.test(clientId)) throw new ConfigError('--login-client-id must be 1 to 200 visible ASCII characters')
  return clientId
}

/** A directory a user names: `~` and `~/…` are the user's home; anything else resolves against the working directory. */
export function parseUserDir(text: string, flag: string): string {
  const v = text.trim()
  if (v === '') throw new ConfigError(`--${flag} must not be empty`)
  if (v === '~' || v.startsWith('~/')) return join(homedir(), v.slice(1))
  return resolve(v)
}

/** A codex `-c` override: `KEY=VALUE`, the key a dotted path, passed to the engine unchanged. */
export function parseEngineConfig(text: string): string {
  const eq = text.indexOf('=')
  if (eq <= 0 || text.slice(0, eq).trim() === '') throw new ConfigError(`invalid --engine-config \`${shown(text)}\`; expected KEY=VALUE`)
  return text
}

/**
 * `APP_SERVER_ENGINE_CONFIG`: one override per line; a value without a newline is split at
 * commas instead (so a TOML value holding a comma needs the one-per-line form).
 */
export function splitEngineConfigEnv(text: string): string[] {
  const items = text.includes('\n') ? text.split(/\r?\n/) : text.split(',')
  return items.map((s) => s.trim()).filter((s) => s.length > 0)
}

/** What `--trust-proxy` tells Fastify: off, every proxy, a hop count, or the proxies' addresses. */
export type TrustProxy = boolean | number | readonly string[]

/**
 * `true`/`false`, a hop count (1 to 100), or a comma list of proxy addresses and CIDR ranges.
 * Each address is checked here, so a typo is refused at start instead of silently trusting nobody.
 */
export function parseTrustProxy(text: string): TrustProxy {
  const v = text.trim().toLowerCase()
  if (v === '' || v === 'false') return false
  if (v === 'true') return true
  if (/^\d+$/.test(v)) return parseInteger(v, 'trust-proxy', 1, 100)
  const items = v.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
  for (const item of items) {
    if (!isAddressOrCidr(item)) throw new ConfigError(`invalid --trust-proxy \`${shown(item)}\`; expected true, a hop count, or a comma list of IP addresses and CIDR ranges`)
  }
  return items
}

function isAddressOrCidr(item: string): boolean {
  const slash = item.indexOf('/')
  const address = slash < 0 ? item : item.slice(0, slash)
  const family = isIP(address)
  if (family === 0) return false
  if (slash < 0) return true
  const bits = item.slice(slash + 1)
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128)
}

/**
 * A `redis://` or `rediss://` URL. The refusal never echoes it: its user-info may hold the
 * Redis password.
 */
export function parseRedisUrl(text: string): string {
  const v = text.trim()
  let ok = false
  try {
    const url = new URL(v)
    ok = (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== ''
  } catch {
    ok = false
  }
  if (!ok) throw new ConfigError('invalid --redis-url: expected redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://…')
  return v
}
