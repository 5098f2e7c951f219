import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import envSchema from 'env-schema'
import { ENV_ONLY, envName, FLAGS } from './flags.js'
import { parseListenUrl } from './listen.js'
import { LOG_LEVELS, type AccountSettings, type Config, type LogLevel, type WsAuthConfig } from './types.js'

/** A refusal to start: one line for stderr, exit code 2 (as clap does in codex). */
export class ConfigError extends Error {
  readonly exitCode = 2
  override name = 'ConfigError'
}

export interface LoadConfigOptions {
  /** The process environment (tests pass their own). */
  readonly env: Readonly<Record<string, string | undefined>>
  /** `.env` file read below the environment; `null` reads none. Default `./.env`. */
  readonly dotenvPath?: string | null
}

type RawValue = string | boolean | string[] | undefined

const MIN_SIGNED_SECRET_BYTES = 32
const MAX_PAYLOAD_CEILING = 1024 * 1024 * 1024

/** Flags + environment (+ `.env`) → one validated config. Throws `ConfigError` on any refusal. */
export function loadConfig(argv: readonly string[], options: LoadConfigOptions): Config {
  const cli = parseCommandLine(argv)
  const env = readEnvironment(options)
  const raw = (name: string): RawValue => cli[name] ?? fromEnv(name, env[envName(name)])

  const listenText = str(raw('listen')) ?? 'ws://127.0.0.1:4500'
  const listen = parseListenUrl(listenText)
  if (!listen) throw new ConfigError(`invalid websocket --listen URL \`${shown(listenText)}\`; expected \`ws://IP:PORT\``)

  const auth = resolveAuth(raw, listen.loopback)

  return {
    listen,
    auth,
    allowOrigins: (raw('allow-origin') as string[] | undefined ?? []).map(checkOrigin),
    urlFile: absolutePathOrNull('url-file', str(raw('url-file'))),
    logLevel: logLevel(str(raw('log-level')) ?? 'info'),
    home: resolveHome(str(raw('home'))),
    maxPayloadBytes: integerFlag('max-payload', str(raw('max-payload')), 16 * 1024 * 1024, 1, MAX_PAYLOAD_CEILING),
    pingIntervalMs: 1000 * integerFlag('ping-interval-seconds', str(raw('ping-interval-seconds')), 0, 0, 86_400),
    limits: {
      httpPerMinute: integerFlag('http-rate-limit', str(raw('http-rate-limit')), 600, 0, 10_000_000),
      failedUpgradesPerMinute: integerFlag('failed-upgrade-limit', str(raw('failed-upgrade-limit')), 30, 0, 10_000_000),
      rpcRatePerSecond: integerFlag('rpc-rate', str(raw('rpc-rate')), 1000, 0, 100_000_000),
      rpcBurst: integerFlag('rpc-burst', str(raw('rpc-burst')), 2000, 1, 100_000_000),
      maxInFlight: integerFlag('max-in-flight', str(raw('max-in-flight')), 4096, 1, 10_000_000),
      maxOutboundBufferBytes: integerFlag('max-outbound-buffer', str(raw('max-outbound-buffer')), 16 * 1024 * 1024, 1024, MAX_PAYLOAD_CEILING),
    },
    accounts: resolveAccounts(raw),
    remoteControlWaitMs: 1000 * integerFlag('remote-control-wait-seconds', str(raw('remote-control-wait-seconds')), 30, 0, 86_400),
    chatgptBaseUrl: env.CHATGPT_BASE_URL ?? defaultOf('CHATGPT_BASE_URL'),
    authIssuer: env.AUTH_ISSUER ?? defaultOf('AUTH_ISSUER'),
  }
}

function parseCommandLine(argv: readonly string[]): Record<string, RawValue> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {}
  for (const f of FLAGS) {
    options[f.name] = f.kind === 'boolean' ? { type: 'boolean' } : { type: 'string', multiple: f.kind === 'list' }
  }
  try {
    const { values } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false })
    return values as Record<string, RawValue>
  } catch (err) {
    throw new ConfigError(describeArgError(err))
  }
}

function describeArgError(err: unknown): string {
  const e = err as { code?: string; message?: string }
  const message = e.message ?? String(err)
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const flag = /'([^']+)'/.exec(message)?.[1] ?? 'argument'
    return `unexpected argument '${flag}' found (see --help)`
  }
  if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const arg = /'([^']+)'/.exec(message)?.[1] ?? 'argument'
    return `unexpected argument '${arg}' found (see --help)`
  }
  // parseArgs' own wording for a flag with a missing value or a value on a boolean flag.
  return message.split('\n')[0] ?? 'invalid arguments'
}

function readEnvironment(options: LoadConfigOptions): Record<string, string | undefined> {
  const properties: Record<string, { type: 'string' }> = {}
  for (const f of FLAGS) properties[envName(f.name)] = { type: 'string' }
  for (const e of ENV_ONLY) properties[e.name] = { type: 'string' }
  const dotenvPath = options.dotenvPath === undefined ? '.env' : options.dotenvPath
  try {
    return envSchema({
      schema: { type: 'object', properties },
      data: [{ ...options.env }],
      env: false,
      dotenv: dotenvPath === null ? false : { path: dotenvPath },
    }) as Record<string, string | undefined>
  } catch (err) {
    throw new ConfigError(`failed to read environment: ${(err as Error).message}`)
  }
}

function fromEnv(flag: string, value: string | undefined): RawValue {
  if (value === undefined) return undefined
  const spec = FLAGS.find((f) => f.name === flag)
  if (spec?.kind === 'boolean') {
    const v = value.trim().toLowerCase()
    if (['1', 'true', 'yes', 'on'].includes(v)) return true
    if (['', '0', 'false', 'no', 'off'].includes(v)) return undefined
    throw new ConfigError(`${envName(flag)} must be true or false`)
  }
  if (spec?.kind === 'list') {
    return value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
  }
  return value
}

function str(v: RawValue): string | undefined {
  return typeof v === 'string' ? v : undefined
}

function defaultOf(name: string): string {
  return ENV_ONLY.find((e) => e.name === name)?.defaultText ?? ''
}

function resolveAuth(raw: (name: string) => RawValue, loopback: boolean): WsAuthConfig {
  const mode = str(raw('ws-auth'))
  const tokenFile = str(raw('ws-token-file'))
  const tokenSha256 = str(raw('ws-token-sha256'))
  const secretFile = str(raw('ws-shared-secret-file'))
  const issuer = str(raw('ws-issuer'))
  const audience = str(raw('ws-audience'))
  const skew = str(raw('ws-max-clock-skew-seconds'))
  const noTokenCheck = raw('no-token-check') === true

  const jwtFlagSet = secretFile !== undefined || issuer !== undefined || audience !== undefined || skew !== undefined
  const tokenFlagSet = tokenFile !== undefined || tokenSha256 !== undefined

  if (mode === undefined) {
    if (jwtFlagSet || tokenFlagSet) {
      throw new ConfigError('websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`')
    }
    if (noTokenCheck && !loopback) throw new ConfigError('--no-token-check is only allowed on loopback listeners')
    return { mode: 'queryToken', enforce: !noTokenCheck }
  }
  if (noTokenCheck) throw new ConfigError('`--no-token-check` cannot be combined with an explicit `--ws-auth` mode')

  if (mode === 'capability-token') {
    if (jwtFlagSet) {
      throw new ConfigError(
        '`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`',
      )
    }
    if (tokenFile !== undefined && tokenSha256 !== undefined) {
      throw new ConfigError('`--ws-token-file` and `--ws-token-sha256` are mutually exclusive')
    }
    if (tokenFile !== undefined) {
      const token = readTrimmedSecret(absolutePath('ws-token-file', tokenFile))
      return { mode: 'capabilityToken', tokenSha256: sha256(Buffer.from(token, 'utf8')) }
    }
    if (tokenSha256 !== undefined) {
      if (!/^[0-9a-fA-F]{64}$/.test(tokenSha256)) {
        throw new ConfigError('--ws-token-sha256 must be a 64-character hex SHA-256 digest')
      }
      return { mode: 'capabilityToken', tokenSha256: Buffer.from(tokenSha256, 'hex') }
    }
    throw new ConfigError('`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set')
  }

  if (mode === 'signed-bearer-token') {
    if (tokenFlagSet) {
      throw new ConfigError('`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, not `signed-bearer-token`')
    }
    if (secretFile === undefined) {
      throw new ConfigError('`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set')
    }
    const path = absolutePath('ws-shared-secret-file', secretFile)
    const secret = Buffer.from(readTrimmedSecret(path), 'utf8')
    if (secret.length < MIN_SIGNED_SECRET_BYTES) {
      throw new ConfigError(`signed websocket bearer secret ${shown(path)} must be at least ${MIN_SIGNED_SECRET_BYTES} bytes`)
    }
    return {
      mode: 'signedBearerToken',
      sharedSecret: new Uint8Array(secret),
      issuer: blankToNull(issuer),
      audience: blankToNull(audience),
      maxClockSkewSeconds: integerFlag('ws-max-clock-skew-seconds', skew, 30, 0, 86_400),
    }
  }

  throw new ConfigError(`invalid value '${shown(mode)}' for '--ws-auth <MODE>': expected capability-token or signed-bearer-token`)
}

/**
 * A value echoed in a refusal: control characters escaped (so the refusal stays one line and
 * cannot forge log lines), and cut at 200 characters.
 */
function shown(value: string): string {
  const escaped = value.replace(/[\x00-\x1f\x7f]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`))
  return escaped.length > 200 ? escaped.slice(0, 200) + '...' : escaped
}

function resolveAccounts(raw: (name: string) => RawValue): AccountSettings {
  const store = (str(raw('credentials-store')) ?? 'file').trim()
  if (store !== 'file' && store !== 'keyring' && store !== 'auto' && store !== 'ephemeral') {
    throw new ConfigError(`invalid value '${shown(store)}' for '--credentials-store <MODE>': expected file, keyring, auto or ephemeral`)
  }
  const forced = str(raw('forced-login-method'))?.trim()
  if (forced !== undefined && forced !== 'chatgpt' && forced !== 'api') {
    throw new ConfigError(`invalid value '${shown(forced)}' for '--forced-login-method <METHOD>': expected chatgpt or api`)
  }
  const workspaces = (raw('forced-chatgpt-workspace-id') as string[] | undefined)?.map((w) => w.trim()).filter((w) => w.length > 0)
  const clientId = (str(raw('login-client-id')) ?? 'app_EMoamEEZ73f0CkXaXp7hrann').trim()
  if (!/^[\x21-\x7e]{1,200}$/.test(clientId)) throw new ConfigError('--login-client-id must be 1 to 200 visible ASCII characters')
  return {
    credentialsStore: store,
    forcedLoginMethod: forced ?? null,
    forcedWorkspaceIds: workspaces && workspaces.length > 0 ? workspaces : null,
    loginCallbackPort: integerFlag('login-callback-port', str(raw('login-callback-port')), 1455, 0, 65535),
    loginClientId: clientId,
  }
}

function readTrimmedSecret(path: string): string {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`failed to read websocket auth secret ${shown(path)}: ${shown(describeIoError(err))}`)
  }
  const trimmed = text.trim()
  if (trimmed.length === 0) throw new ConfigError(`websocket auth secret ${shown(path)} must not be empty`)
  return trimmed
}

/** Node's message without the trailing `, open '/path'` (the path is already in our message). */
function describeIoError(err: unknown): string {
  const message = (err as Error).message ?? String(err)
  return message.replace(/, \w+ '.*'$/, '')
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest()
}

function absolutePath(flag: string, value: string): string {
  if (!isAbsolute(value)) throw new ConfigError(`--${flag} must be an absolute path`)
  return value
}

function absolutePathOrNull(flag: string, value: string | undefined): string | null {
  return value === undefined ? null : absolutePath(flag, value)
}

function blankToNull(value: string | undefined): string | null {
  const t = value?.trim()
  return t ? t : null
}

function integerFlag(flag: string, value: string | undefined, dflt: number, min: number, max: number): number {
  if (value === undefined) return dflt
  const t = value.trim()
  const n = /^\d{1,12}$/.test(t) ? Number(t) : NaN
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`invalid value for --${flag}: expected an integer from ${min} to ${max}`)
  }
  return n
}

function logLevel(value: string): LogLevel {
  const v = value.trim().toLowerCase()
  if ((LOG_LEVELS as readonly string[]).includes(v)) return v as LogLevel
  throw new ConfigError(`invalid value for --log-level: expected one of ${LOG_LEVELS.join(', ')}`)
}

function checkOrigin(value: string): string {
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

function resolveHome(value: string | undefined): string {
  if (value === undefined || value.trim() === '') return join(homedir(), '.app-server')
  const v = value.trim()
  if (v === '~' || v.startsWith('~/')) return join(homedir(), v.slice(1))
  return resolve(v)
}
