/**
 * Flags + environment (+ `.env`) → one validated config, or a one-line refusal.
 *
 * Each setting is parsed by its flag-table parser when it is first read, in a fixed order
 * (listen, auth, origins, the rest in table order, then accounts), so the first refusal a user
 * sees does not depend on how the command line was spelled. The cross-setting rules (which
 * auth flags go with which mode) are here; a setting's own rules are in its parser.
 */
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { ConfigError, shown } from './errors.js'
import { envOnlyDefault, FLAG_TABLE, type FlagKey, type FlagValue } from './flags.js'
import { readSources, sourcesOf, type RawSettings, type SourceOptions } from './sources.js'
import type { AccountSettings, Config, EngineSettings, WsAuthConfig } from './types.js'
import { sha256 } from '../util/sha256.js'

export { ConfigError } from './errors.js'
export type LoadConfigOptions = SourceOptions

const MIN_SIGNED_SECRET_BYTES = 32

/** A setting's typed value: its parser over what a layer gave, or its default. */
type Reader = <K extends FlagKey>(key: K) => FlagValue<K>

/** Throws `ConfigError` on any refusal. */
export function loadConfig(argv: readonly string[], options: LoadConfigOptions): Config {
  const settings = readSources(argv, options)
  const value: Reader = (key) => {
    const given = settings.flag(key)
    const spec = FLAG_TABLE[key]
    return (given === null ? spec.defaultValue() : spec.parse(given.raw)) as FlagValue<typeof key>
  }

  const listen = value('listen')
  const auth = resolveAuth(settings, value, listen.loopback)
  return {
    listen,
    auth,
    allowOrigins: value('allowOrigin'),
    urlFile: value('urlFile'),
    logLevel: value('logLevel'),
    home: value('home'),
    maxPayloadBytes: value('maxPayload'),
    pingIntervalMs: 1000 * value('pingIntervalSeconds'),
    shutdownTimeoutMs: 1000 * value('shutdownTimeoutSeconds'),
    limits: {
      httpPerMinute: value('httpRateLimit'),
      failedUpgradesPerMinute: value('failedUpgradeLimit'),
      rpcRatePerSecond: value('rpcRate'),
      rpcBurst: value('rpcBurst'),
      maxInFlight: value('maxInFlight'),
      maxInFlightPerConnection: value('maxInFlightPerConnection'),
      maxOutboundBufferBytes: value('maxOutboundBuffer'),
      maxConnections: value('maxConnections'),
      maxPendingPerClient: value('maxPendingPerClient'),
      headerTimeoutMs: value('headerTimeoutMs'),
    },
    accounts: resolveAccounts(value),
    remoteControlWaitMs: 1000 * value('remoteControlWaitSeconds'),
    remoteControlMaxConnections: value('remoteControlMaxConnections'),
    chatgptBaseUrl: settings.envOnly('CHATGPT_BASE_URL')?.raw ?? envOnlyDefault('CHATGPT_BASE_URL'),
    authIssuer: settings.envOnly('AUTH_ISSUER')?.raw ?? envOnlyDefault('AUTH_ISSUER'),
    engine: resolveEngine(value, options.env),
    trustProxy: value('trustProxy'),
    redisUrl: value('redisUrl'),
    metrics: value('metrics'),
    sources: sourcesOf(settings),
    unknownSettings: settings.unknown,
  }
}

/**
 * The auth mode and its flags, checked in this order: flags given without a mode; the
 * `--no-token-check` combinations; then the chosen mode's own flags.
 */
function resolveAuth(settings: RawSettings, value: Reader, loopback: boolean): WsAuthConfig {
  const isSet = (key: FlagKey) => settings.flag(key) !== null
  const mode = value('wsAuth')
  const noTokenCheck = value('noTokenCheck')
  const jwtFlagSet = isSet('wsSharedSecretFile') || isSet('wsIssuer') || isSet('wsAudience') || isSet('wsMaxClockSkewSeconds') || isSet('wsMaxTokenLifetimeSeconds')
  const tokenFlagSet = isSet('wsTokenFile') || isSet('wsTokenSha256')

  if (mode === null) {
    if (jwtFlagSet || tokenFlagSet) {
      throw new ConfigError('websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`')
    }
    if (noTokenCheck && !loopback) throw new ConfigError('--no-token-check is only allowed on loopback listeners')
    return { mode: 'queryToken', enforce: !noTokenCheck }
  }
  if (noTokenCheck) throw new ConfigError('`--no-token-check` cannot be combined with an explicit `--ws-auth` mode')

  if (mode === 'capability-token') {
    // codex's own message names its four JWT flags; the gateway's fifth gets its own.
    if (isSet('wsMaxTokenLifetimeSeconds')) throw new ConfigError('`--ws-max-token-lifetime-seconds` requires `--ws-auth signed-bearer-token`')
    if (jwtFlagSet) {
      throw new ConfigError(
        '`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`',
      )
    }
    if (isSet('wsTokenFile') && isSet('wsTokenSha256')) {
      throw new ConfigError('`--ws-token-file` and `--ws-token-sha256` are mutually exclusive')
    }
    const tokenFile = value('wsTokenFile')
    if (tokenFile !== null) {
      const token = readTrimmedSecret(tokenFile)
      return { mode: 'capabilityToken', tokenSha256: sha256(Buffer.from(token, 'utf8')), credentialFile: tokenFile }
    }
    const tokenSha256 = value('wsTokenSha256')
    if (tokenSha256 !== null) {
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
    const path = value('wsSharedSecretFile')
    if (path === null) {
      throw new ConfigError('`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set')
    }
    const secret = Buffer.from(readTrimmedSecret(path), 'utf8')
    if (secret.length < MIN_SIGNED_SECRET_BYTES) {
      throw new ConfigError(`signed websocket bearer secret ${shown(path)} must be at least ${MIN_SIGNED_SECRET_BYTES} bytes`)
    }
    return {
      mode: 'signedBearerToken',
      sharedSecret: new Uint8Array(secret),
      credentialFile: path,
      issuer: value('wsIssuer'),
      audience: value('wsAudience'),
      maxClockSkewSeconds: value('wsMaxClockSkewSeconds'),
      maxTokenLifetimeSeconds: value('wsMaxTokenLifetimeSeconds'),
    }
  }

  throw new ConfigError(`invalid value '${shown(mode)}' for '--ws-auth <MODE>': expected capability-token or signed-bearer-token`)
}

function resolveAccounts(value: Reader): AccountSettings {
  return {
    credentialsStore: value('credentialsStore'),
    forcedLoginMethod: value('forcedLoginMethod'),
    forcedWorkspaceIds: value('forcedChatgptWorkspaceId'),
    loginClientId: value('loginClientId'),
    loginCallbackPort: value('loginCallbackPort'),
  }
}

/** The engine home defaults to the user's own codex home, as the codex CLI finds it. */
function resolveEngine(value: Reader, env: LoadConfigOptions['env']): EngineSettings {
  const codexHome = env.CODEX_HOME?.trim()
  return {
    mode: value('engine'),
    binary: value('engineBin'),
    home: value('engineHome') ?? (codexHome ? resolve(codexHome) : join(homedir(), '.codex')),
    configOverrides: value('engineConfig'),
  }
}

/** The file's text, trimmed; text that is not valid UTF-8 is refused (decoded, it would silently differ from its bytes). */
function readTrimmedSecret(path: string): string {
  let bytes: Buffer
  try {
    bytes = readFileSync(path)
  } catch (err) {
    throw new ConfigError(`failed to read websocket auth secret ${shown(path)}: ${shown(describeIoError(err))}`)
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    throw new ConfigError(`websocket auth secret ${shown(path)} is not valid UTF-8 text (it is read as trimmed text)`)
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
