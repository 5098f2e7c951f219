/**
 * The settings of `app-server`: every command-line flag with its environment twin, and the few
 * settings that exist only in the environment.
 *
 * This table is the single source of each setting's kind, default, bounds and parser. Argument
 * parsing, environment and `.env` loading, `--help` and `.env.example` (a test keeps that file
 * in step) are all derived from it; no other file repeats a default. A default is written once,
 * as a user would write the value, and goes through the same parser as a user's value.
 */
import { oneOf, parseAbsolutePath, parseBlankAsNull, parseClientId, parseEngineConfig, parseHome, parseUserDir, splitEngineConfigEnv, parseInteger, parseListen, parseLogLevel, parseOrigin, parseRedisUrl, parseSwitch, parseTrustProxy } from './parsers.js'

export type FlagKind = 'string' | 'integer' | 'boolean' | 'list'

/** What the command line or the environment gave: text, or the items of a repeatable flag. */
export type RawSetting = string | readonly string[]

export interface FlagSpec<T = unknown> {
  /** Long flag name without the leading dashes. */
  readonly name: string
  readonly kind: FlagKind
  readonly valueName?: string
  readonly help: string
  /** The default as a user would write it (`--help`, `.env.example`); absent: unset. */
  readonly defaultText?: string
  /** Inclusive bounds of an integer flag. */
  readonly bounds?: { readonly min: number; readonly max: number }
  /** The value a flag, the environment or `.env` gave → the typed value (throws `ConfigError`). */
  readonly parse: (raw: RawSetting) => T
  /** The value when nothing sets the flag. */
  readonly defaultValue: () => T
  /** How a list flag's environment value splits into items (default: at commas). */
  readonly splitEnv?: (text: string) => string[]
}

type Help = { readonly valueName?: string; readonly help: string }

/** A string flag; without a default it is `null` when unset. */
function text<T>(name: string, o: Help & { readonly parse: (text: string, flag: string, valueName?: string) => T }): FlagSpec<T | null>
function text<T>(name: string, o: Help & { readonly default: string; readonly parse: (text: string, flag: string, valueName?: string) => T }): FlagSpec<T>
function text<T>(name: string, o: Help & { readonly default?: string; readonly parse: (text: string, flag: string, valueName?: string) => T }): FlagSpec<T | null> {
  const parse = (raw: RawSetting) => o.parse(single(raw), name, o.valueName)
  const dflt = o.default
  return {
    name,
    kind: 'string',
    valueName: o.valueName,
    help: o.help,
    ...(dflt !== undefined ? { defaultText: dflt } : {}),
    parse,
    defaultValue: () => (dflt === undefined ? null : parse(dflt)),
  }
}

function integer(name: string, o: Help & { readonly default: number; readonly min: number; readonly max: number }): FlagSpec<number> {
  const { min, max } = o
  return {
    name,
    kind: 'integer',
    valueName: o.valueName,
    help: o.help,
    defaultText: String(o.default),
    bounds: { min, max },
    parse: (raw) => parseInteger(single(raw), name, min, max),
    defaultValue: () => o.default,
  }
}

/** A switch: present on the command line, or a yes/no word in the environment. */
function toggle(name: string, help: string): FlagSpec<boolean> {
  return { name, kind: 'boolean', help, defaultText: 'false', parse: (raw) => parseSwitch(single(raw), envName(name)), defaultValue: () => false }
}

/** Repeatable on the command line, comma-separated in the environment (unless `splitEnv` says otherwise); empty when unset. */
function list<T>(
  name: string,
  o: Help & { readonly parse: (items: readonly string[]) => T; readonly empty: T; readonly splitEnv?: (text: string) => string[] },
): FlagSpec<T> {
  return {
    name,
    kind: 'list',
    valueName: o.valueName,
    help: o.help,
    parse: (raw) => o.parse(typeof raw === 'string' ? [raw] : raw),
    defaultValue: () => o.empty,
    ...(o.splitEnv ? { splitEnv: o.splitEnv } : {}),
  }
}

function single(raw: RawSetting): string {
  return typeof raw === 'string' ? raw : raw.join(',')
}

const asGiven = (text: string) => text
const MAX_PAYLOAD_CEILING = 1024 * 1024 * 1024
const DAY_SECONDS = 86_400

const TABLE = {
  listen: text('listen', { valueName: 'ws://IP:PORT', default: 'ws://127.0.0.1:4500', parse: parseListen, help: 'address to listen on (literal IP; port 0 picks a free port)' }),
  // The auth flags are read raw: which combinations are allowed, and in which order they are
  // checked, is the auth rule in load.ts.
  wsAuth: text('ws-auth', { valueName: 'MODE', parse: asGiven, help: 'bearer auth mode: capability-token | signed-bearer-token (absent: generated query token)' }),
  wsTokenFile: text('ws-token-file', { valueName: 'PATH', parse: parseAbsolutePath, help: 'absolute path of a file holding the capability token' }),
  wsTokenSha256: text('ws-token-sha256', { valueName: 'HEX', parse: asGiven, help: 'SHA-256 (64 hex chars) of the capability token' }),
  wsSharedSecretFile: text('ws-shared-secret-file', { valueName: 'PATH', parse: parseAbsolutePath, help: 'absolute path of the HS256 secret (at least 32 bytes)' }),
  wsIssuer: text('ws-issuer', { valueName: 'ISS', parse: parseBlankAsNull, help: 'required JWT issuer (blank: not checked)' }),
  wsAudience: text('ws-audience', { valueName: 'AUD', parse: parseBlankAsNull, help: 'required JWT audience (blank: not checked)' }),
  wsMaxClockSkewSeconds: integer('ws-max-clock-skew-seconds', { valueName: 'N', default: 30, min: 0, max: DAY_SECONDS, help: 'clock skew allowed on JWT exp and nbf' }),
  wsMaxTokenLifetimeSeconds: integer('ws-max-token-lifetime-seconds', { valueName: 'N', default: 0, min: 0, max: 366 * DAY_SECONDS, help: 'refuse JWTs whose exp − iat (or exp − now without iat) is longer (0: off)' }),
  noTokenCheck: toggle('no-token-check', 'accept connections without a valid query token (loopback only; degraded scopes)'),
  allowOrigin: list('allow-origin', {
    valueName: 'ORIGIN',
    parse: (items): readonly string[] => items.map(parseOrigin),
    empty: [],
    help: 'admit browser requests from this exact origin (repeatable; env: comma-separated)',
  }),
  urlFile: text('url-file', { valueName: 'PATH', parse: parseAbsolutePath, help: 'also write the connection URL to PATH (mode 0600)' }),
  logLevel: text('log-level', { valueName: 'LEVEL', default: 'info', parse: parseLogLevel, help: 'fatal | error | warn | info | debug | trace | silent' }),
  home: text('home', { valueName: 'DIR', default: '~/.app-server', parse: parseHome, help: 'state directory' }),
  maxPayload: integer('max-payload', { valueName: 'BYTES', default: 16 * 1024 * 1024, min: 1, max: MAX_PAYLOAD_CEILING, help: 'largest inbound WebSocket message; larger closes with 1009' }),
  pingIntervalSeconds: integer('ping-interval-seconds', { valueName: 'N', default: 0, min: 0, max: DAY_SECONDS, help: 'server ping interval that closes dead peers (0: off)' }),
  maxOutboundBuffer: integer('max-outbound-buffer', {
    valueName: 'BYTES',
    default: 16 * 1024 * 1024,
    min: 1024,
    max: MAX_PAYLOAD_CEILING,
    help: 'bytes queued to a client that does not read before it is closed (1008 slow consumer)',
  }),
  maxConnections: integer('max-connections', {
    valueName: 'N',
    default: 0,
    min: 0,
    max: 1_000_000,
    help: 'WebSocket connections at once; past it upgrades get 503 (0: derived from the open-file limit)',
  }),
  maxPendingPerClient: integer('max-pending-per-client', {
    valueName: 'N',
    default: 32,
    min: 1,
    max: 100_000,
    help: 'sockets one client may hold before finishing its request headers; past it its oldest is closed',
  }),
  shutdownTimeoutSeconds: integer('shutdown-timeout-seconds', {
    valueName: 'N',
    default: 10,
    min: 0,
    max: DAY_SECONDS,
    help: 'on SIGINT/SIGTERM, how long requests in flight may take; then they are answered -32603 and sockets close 1001',
  }),
  headerTimeoutMs: integer('header-timeout-ms', { valueName: 'MS', default: 10_000, min: 100, max: 120_000, help: 'time a socket has to send its request headers (and the request to finish)' }),
  httpRateLimit: integer('http-rate-limit', { valueName: 'N', default: 600, min: 0, max: 10_000_000, help: 'health requests and upgrade attempts per minute per remote address (0: off)' }),
  failedUpgradeLimit: integer('failed-upgrade-limit', {
    valueName: 'N',
    default: 30,
    min: 0,
    max: 10_000_000,
    help: 'failed upgrades per minute per remote address before all its upgrades get 429 (0: off)',
  }),
  trustProxy: text('trust-proxy', {
    valueName: 'PROXIES',
    default: 'false',
    parse: parseTrustProxy,
    help: 'take the client address from X-Forwarded-For through these proxies: true (any) | a hop count | comma list of IPs/CIDRs',
  }),
  redisUrl: text('redis-url', { valueName: 'URL', parse: parseRedisUrl, help: 'share the HTTP rate limit and failed-upgrade budget with other replicas through this Redis' }),
  metrics: toggle('metrics', 'serve Prometheus metrics at /metrics (same credential as the WebSocket; JWT scope metrics:read)'),
  rpcRate: integer('rpc-rate', { valueName: 'N', default: 1000, min: 0, max: 100_000_000, help: 'JSON-RPC messages per second per connection (0: off)' }),
  rpcBurst: integer('rpc-burst', { valueName: 'N', default: 2000, min: 1, max: 100_000_000, help: 'JSON-RPC messages a connection may send at once above its rate' }),
  maxInFlight: integer('max-in-flight', { valueName: 'N', default: 4096, min: 1, max: 10_000_000, help: 'JSON-RPC requests handled at once by the whole process' }),
  maxInFlightPerConnection: integer('max-in-flight-per-connection', {
    valueName: 'N',
    default: 128,
    min: 1,
    max: 10_000_000,
    help: 'JSON-RPC requests one connection may have handled at once',
  }),
  credentialsStore: text('credentials-store', {
    valueName: 'MODE',
    default: 'file',
    parse: oneOf(['file', 'keyring', 'auto', 'ephemeral'], 'file, keyring, auto or ephemeral'),
    help: 'where credentials live: file | keyring | auto | ephemeral',
  }),
  forcedLoginMethod: text('forced-login-method', { valueName: 'METHOD', parse: oneOf(['chatgpt', 'api'], 'chatgpt or api'), help: 'allow only this login method: chatgpt | api' }),
  forcedChatgptWorkspaceId: list('forced-chatgpt-workspace-id', {
    valueName: 'ID',
    parse: (items): readonly string[] | null => {
      const ids = items.map((w) => w.trim()).filter((w) => w.length > 0)
      return ids.length > 0 ? ids : null
    },
    empty: null,
    help: 'allow only these ChatGPT workspaces (repeatable; env: comma-separated)',
  }),
  // Codex's registered redirect port; login-server.ts falls back to its second one when busy.
  loginCallbackPort: integer('login-callback-port', { valueName: 'PORT', default: 1455, min: 0, max: 65535, help: 'local port of the browser login callback (1457 when busy; 0: any)' }),
  remoteControlWaitSeconds: integer('remote-control-wait-seconds', {
    valueName: 'N',
    default: 30,
    min: 0,
    max: DAY_SECONDS,
    help: '`remote-control`: how long to wait for the backend before reporting `connecting`',
  }),
  remoteControlMaxConnections: integer('remote-control-max-connections', {
    valueName: 'N',
    default: 128,
    min: 1,
    max: 100_000,
    help: 'remote clients connected through remote control at once; past it an initialize gets -32001',
  }),
  // Codex's public client id; configurable because a test or another deployment has its own.
  loginClientId: text('login-client-id', { valueName: 'ID', default: 'app_EMoamEEZ73f0CkXaXp7hrann', parse: parseClientId, help: 'public OAuth client id for ChatGPT login' }),
  engine: text('engine', {
    valueName: 'MODE',
    default: 'auto',
    parse: oneOf(['auto', 'on', 'off'], 'auto, on or off'),
    help: 'the codex engine behind the gateway: auto (when a binary resolves) | on (expected; missing is an error) | off (gateway alone)',
  }),
  engineBin: text('engine-bin', { valueName: 'PATH', parse: parseAbsolutePath, help: 'absolute path of the codex binary (default: the installed @openai/codex)' }),
  // No table default: it is `$CODEX_HOME` when set, which load.ts reads from the environment.
  engineHome: text('engine-home', { valueName: 'DIR', parse: parseUserDir, help: "the engine's CODEX_HOME: its config, MCP servers, thread history (default: $CODEX_HOME, else ~/.codex)" }),
  engineConfig: list('engine-config', {
    valueName: 'KEY=VALUE',
    parse: (items): readonly string[] => items.map(parseEngineConfig),
    empty: [],
    splitEnv: splitEngineConfigEnv,
    help: 'codex config override passed to the engine as `-c KEY=VALUE` (TOML value; repeatable; env: one per line, or comma-separated when there is no newline)',
  }),
} as const

export type Flags = typeof TABLE
export type FlagKey = keyof Flags
/** The typed value of a flag once loaded. */
export type FlagValue<K extends FlagKey> = ReturnType<Flags[K]['parse']> | ReturnType<Flags[K]['defaultValue']>

/** Every flag, in `--help` order, keyed by its camel-case name. */
export const FLAG_TABLE: Flags = TABLE
export const FLAGS: readonly (FlagSpec & { readonly key: FlagKey })[] = (Object.keys(TABLE) as FlagKey[]).map((key) => ({ key, ...(TABLE[key] as FlagSpec) }))

/** A flag's value when nothing sets it (for code that needs the default outside a config). */
export function flagDefault<K extends FlagKey>(key: K): ReturnType<Flags[K]['defaultValue']> {
  return TABLE[key].defaultValue() as ReturnType<Flags[K]['defaultValue']>
}

/** `--ws-auth` → `APP_SERVER_WS_AUTH`. */
export function envName(flag: string): string {
  return 'APP_SERVER_' + flag.toUpperCase().replaceAll('-', '_')
}

export interface EnvOnlySpec {
  readonly name: string
  readonly defaultText: string
  readonly help: string
}

/** Settings that exist only as environment variables (used as given). */
export const ENV_ONLY = [
  { name: 'CHATGPT_BASE_URL', defaultText: 'https://chatgpt.com/backend-api', help: 'ChatGPT backend base URL' },
  { name: 'AUTH_ISSUER', defaultText: 'https://auth.openai.com', help: 'OAuth issuer for ChatGPT login' },
] as const satisfies readonly EnvOnlySpec[]

export type EnvOnlyName = (typeof ENV_ONLY)[number]['name']

export function envOnlyDefault(name: EnvOnlyName): string {
  return ENV_ONLY.find((e) => e.name === name)!.defaultText
}

/** Every setting a config records the source of. */
export type SettingName = FlagKey | EnvOnlyName

/** The options block of `--help`: every flag with its default and environment name. */
export function optionsHelp(): string {
  const lines = ['Options (each also read from its environment variable and from ./.env; flags win; an empty value is unset):']
  for (const f of FLAGS) {
    const left = `  --${f.name}${f.valueName ? ' ' + f.valueName : ''}`
    const dflt = f.defaultText !== undefined ? ` [default: ${f.defaultText}]` : ''
    lines.push(left, `      ${f.help}${dflt}`, `      env: ${envName(f.name)}`)
  }
  lines.push('  -h, --help', '      print this help', '  -V, --version', '      print the version', '')
  lines.push('Environment only:')
  for (const e of ENV_ONLY) lines.push(`  ${e.name}  ${e.help} [default: ${e.defaultText}]`)
  lines.push('  NO_COLOR  when set (non-empty), no colours in terminal output')
  return lines.join('\n') + '\n'
}
