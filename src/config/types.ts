/** The validated, typed configuration the whole server is built from. */
import type { SettingName } from './flags.js'
import type { TrustProxy } from './parsers.js'

/** Where a setting's value came from: a flag, the environment, the `.env` file, or the default. */
export type ValueSource = 'flag' | 'env' | '.env' | 'default'

export type AuthModeName = 'queryToken' | 'capabilityToken' | 'signedBearerToken'

export type WsAuthConfig =
  | {
      readonly mode: 'queryToken'
      /** false under `--no-token-check`: bad or missing tokens are admitted, degraded. */
      readonly enforce: boolean
    }
  | {
      readonly mode: 'capabilityToken'
      /** SHA-256 of the capability token; the token itself is never kept. */
      readonly tokenSha256: Buffer
      /** The `--ws-token-file` it came from (the runtime file names it); absent with `--ws-token-sha256`. */
      readonly credentialFile?: string
    }
  | {
      readonly mode: 'signedBearerToken'
      readonly sharedSecret: Uint8Array
      /** The `--ws-shared-secret-file` (the runtime file names it). */
      readonly credentialFile?: string
      readonly issuer: string | null
      readonly audience: string | null
      readonly maxClockSkewSeconds: number
      /** 0: not checked. */
      readonly maxTokenLifetimeSeconds: number
    }

export interface ListenAddress {
  /** Literal IP, without brackets. */
  readonly host: string
  readonly port: number
  readonly loopback: boolean
}

export interface Config {
  readonly listen: ListenAddress
  readonly auth: WsAuthConfig
  /** Exact `scheme://host[:port]` origins admitted despite the browser defence. */
  readonly allowOrigins: readonly string[]
  readonly urlFile: string | null
  readonly logLevel: LogLevel
  readonly home: string
  readonly maxPayloadBytes: number
  readonly pingIntervalMs: number
  /** How long a drain waits for requests in flight before answering them itself. */
  readonly shutdownTimeoutMs: number
  readonly limits: Limits
  readonly accounts: AccountSettings
  readonly remoteControlWaitMs: number
  /** Remote-control virtual connections open at once (each holds a session, and an engine connection with the engine on). */
  readonly remoteControlMaxConnections: number
  readonly chatgptBaseUrl: string
  readonly authIssuer: string
  readonly engine: EngineSettings
  /** Which peers may name the client address in X-Forwarded-For (false: none). */
  readonly trustProxy: TrustProxy
  /** Redis shared by replicas for the HTTP limit and the failed-upgrade budget; null: per process. */
  readonly redisUrl: string | null
  /** Serve `/metrics`. */
  readonly metrics: boolean
  /** The layer each setting came from (a user's choice, or the default). */
  readonly sources: Readonly<Record<SettingName, ValueSource>>
  /** `APP_SERVER_*` names in the environment or `.env` that are no setting (typos, warned about at start). */
  readonly unknownSettings: readonly { readonly name: string; readonly source: 'env' | '.env' }[]
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/** Rate limits and load bounds; 0 turns a per-minute or per-second limit off. */
export interface Limits {
  readonly httpPerMinute: number
  readonly failedUpgradesPerMinute: number
  readonly rpcRatePerSecond: number
  readonly rpcBurst: number
  readonly maxInFlight: number
  /** Requests one connection may have in flight; past it its requests get -32001. */
  readonly maxInFlightPerConnection: number
  readonly maxOutboundBufferBytes: number
  /** WebSocket connections at once; 0: derived from the open-file limit at start. */
  readonly maxConnections: number
  /** Sockets per client that have not finished their request headers. */
  readonly maxPendingPerClient: number
  readonly headerTimeoutMs: number
}

export interface AccountSettings {
  readonly credentialsStore: 'file' | 'keyring' | 'auto' | 'ephemeral'
  readonly forcedLoginMethod: 'chatgpt' | 'api' | null
  readonly forcedWorkspaceIds: readonly string[] | null
  readonly loginCallbackPort: number
  readonly loginClientId: string
}

export type EngineMode = 'auto' | 'on' | 'off'

export interface EngineSettings {
  /** auto: run one when a binary resolves; on: one is expected (missing is an error); off: gateway alone. */
  readonly mode: EngineMode
  /** An explicit binary (`--engine-bin`), or null for the installed `@openai/codex`. */
  readonly binary: string | null
  /** The engine's `CODEX_HOME`. */
  readonly home: string
  /** `-c KEY=VALUE` overrides, passed through unchanged. */
  readonly configOverrides: readonly string[]
}
