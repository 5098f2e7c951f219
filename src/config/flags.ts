/**
 * The command-line flags of `app-server`, each with its environment twin.
 *
 * This table is the single source for argument parsing, environment loading,
 * `--help` and `.env.example` (a test keeps that file in step with it).
 */

export type FlagKind = 'string' | 'boolean' | 'list'

export interface FlagSpec {
  /** Long flag name without the leading dashes. */
  readonly name: string
  readonly kind: FlagKind
  /** Default shown in `--help` and `.env.example`; `undefined` means unset. */
  readonly defaultText?: string
  readonly valueName?: string
  readonly help: string
}

export const FLAGS: readonly FlagSpec[] = [
  { name: 'listen', kind: 'string', valueName: 'ws://IP:PORT', defaultText: 'ws://127.0.0.1:4500', help: 'address to listen on (literal IP; port 0 picks a free port)' },
  { name: 'ws-auth', kind: 'string', valueName: 'MODE', help: 'bearer auth mode: capability-token | signed-bearer-token (absent: generated query token)' },
  { name: 'ws-token-file', kind: 'string', valueName: 'PATH', help: 'absolute path of a file holding the capability token' },
  { name: 'ws-token-sha256', kind: 'string', valueName: 'HEX', help: 'SHA-256 (64 hex chars) of the capability token' },
  { name: 'ws-shared-secret-file', kind: 'string', valueName: 'PATH', help: 'absolute path of the HS256 secret (at least 32 bytes)' },
  { name: 'ws-issuer', kind: 'string', valueName: 'ISS', help: 'required JWT issuer (blank: not checked)' },
  { name: 'ws-audience', kind: 'string', valueName: 'AUD', help: 'required JWT audience (blank: not checked)' },
  { name: 'ws-max-clock-skew-seconds', kind: 'string', valueName: 'N', defaultText: '30', help: 'clock skew allowed on JWT exp and nbf' },
  { name: 'no-token-check', kind: 'boolean', defaultText: 'false', help: 'accept connections without a valid query token (loopback only; degraded scopes)' },
  { name: 'allow-origin', kind: 'list', valueName: 'ORIGIN', help: 'admit browser requests from this exact origin (repeatable; env: comma-separated)' },
  { name: 'url-file', kind: 'string', valueName: 'PATH', help: 'also write the connection URL to PATH (mode 0600)' },
  { name: 'log-level', kind: 'string', valueName: 'LEVEL', defaultText: 'info', help: 'fatal | error | warn | info | debug | trace | silent' },
  { name: 'home', kind: 'string', valueName: 'DIR', defaultText: '~/.app-server', help: 'state directory' },
  { name: 'max-payload', kind: 'string', valueName: 'BYTES', defaultText: '16777216', help: 'largest inbound WebSocket message; larger closes with 1009' },
  { name: 'ping-interval-seconds', kind: 'string', valueName: 'N', defaultText: '0', help: 'server ping interval that closes dead peers (0: off)' },
  { name: 'max-outbound-buffer', kind: 'string', valueName: 'BYTES', defaultText: '16777216', help: 'bytes queued to a client that does not read before it is closed (1008 slow consumer)' },
  { name: 'http-rate-limit', kind: 'string', valueName: 'N', defaultText: '600', help: 'health requests and upgrade attempts per minute per remote address (0: off)' },
  { name: 'failed-upgrade-limit', kind: 'string', valueName: 'N', defaultText: '30', help: 'failed upgrades per minute per remote address before all its upgrades get 429 (0: off)' },
  { name: 'rpc-rate', kind: 'string', valueName: 'N', defaultText: '1000', help: 'JSON-RPC messages per second per connection (0: off)' },
  { name: 'rpc-burst', kind: 'string', valueName: 'N', defaultText: '2000', help: 'JSON-RPC messages a connection may send at once above its rate' },
  { name: 'max-in-flight', kind: 'string', valueName: 'N', defaultText: '4096', help: 'JSON-RPC requests handled at once by the whole process' },
  { name: 'credentials-store', kind: 'string', valueName: 'MODE', defaultText: 'file', help: 'where credentials live: file | keyring | auto | ephemeral' },
  { name: 'forced-login-method', kind: 'string', valueName: 'METHOD', help: 'allow only this login method: chatgpt | api' },
  { name: 'forced-chatgpt-workspace-id', kind: 'list', valueName: 'ID', help: 'allow only these ChatGPT workspaces (repeatable; env: comma-separated)' },
  { name: 'login-callback-port', kind: 'string', valueName: 'PORT', defaultText: '1455', help: 'local port of the browser login callback (1457 when busy; 0: any)' },
  { name: 'remote-control-wait-seconds', kind: 'string', valueName: 'N', defaultText: '30', help: '`remote-control`: how long to wait for the backend before reporting `connecting`' },
  { name: 'login-client-id', kind: 'string', valueName: 'ID', defaultText: 'app_EMoamEEZ73f0CkXaXp7hrann', help: 'public OAuth client id for ChatGPT login' },
]

/** `--ws-auth` → `APP_SERVER_WS_AUTH`. */
export function envName(flag: string): string {
  return 'APP_SERVER_' + flag.toUpperCase().replaceAll('-', '_')
}

/** Settings that exist only as environment variables. */
export const ENV_ONLY: readonly { name: string; defaultText: string; help: string }[] = [
  { name: 'CHATGPT_BASE_URL', defaultText: 'https://chatgpt.com/backend-api', help: 'ChatGPT backend base URL' },
  { name: 'AUTH_ISSUER', defaultText: 'https://auth.openai.com', help: 'OAuth issuer for ChatGPT login' },
]

export function helpText(): string {
  const lines = [
    'Usage: app-server [OPTIONS]                  serve JSON-RPC over WebSocket',
    '       app-server login [--with-api-key]     sign in (browser flow, or an API key read from stdin)',
    '       app-server logout                     sign out and clear stored credentials',
    '       app-server status                     show the account and its rate limits',
    '       app-server remote-control [--json]    serve with remote control enabled',
    '',
    'Serves the codex app-server JSON-RPC protocol over WebSocket.',
    '',
    'Options (each also read from its environment variable and from ./.env; flags win):',
  ]
  for (const f of FLAGS) {
    const left = `  --${f.name}${f.valueName ? ' ' + f.valueName : ''}`
    const dflt = f.defaultText !== undefined ? ` [default: ${f.defaultText}]` : ''
    lines.push(left, `      ${f.help}${dflt}`, `      env: ${envName(f.name)}`)
  }
  lines.push('  -h, --help', '      print this help', '')
  lines.push('Environment only:')
  for (const e of ENV_ONLY) lines.push(`  ${e.name}  ${e.help} [default: ${e.defaultText}]`)
  return lines.join('\n') + '\n'
}
