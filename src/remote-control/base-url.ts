/**
 * Where remote control talks to: the enroll, refresh and websocket URLs derived from
 * `{CHATGPT_BASE_URL}` (codex `normalize_remote_control_url`).
 *
 * The host allow-list matters because the ChatGPT access token goes to the enroll and refresh
 * URLs: only the ChatGPT hosts (over https) and this machine's loopback (for local backends
 * and tests) may receive it.
 */
import { REDACTED } from '../util/redaction-markers.js'

export interface RemoteControlUrls {
  /** The base with a trailing slash, as the paths are joined to it. */
  readonly baseUrl: string
  /** `POST {base}/wham/remote/control/server/enroll` */
  readonly enrollUrl: string
  /** `POST {base}/wham/remote/control/server/refresh` */
  readonly refreshUrl: string
  /** `{base}/wham/remote/control/server` with `wss` for https and `ws` for http. */
  readonly websocketUrl: string
}

const ENROLL_PATH = 'wham/remote/control/server/enroll'
const REFRESH_PATH = 'wham/remote/control/server/refresh'
const WEBSOCKET_PATH = 'wham/remote/control/server'

// Codex's wording, so operators see the same complaint from either server.
const EXPECTED = 'expected HTTPS URL for chatgpt.com or chatgpt-staging.com, or HTTP/HTTPS URL for localhost'

/** A remote control base URL that is not allowed; its message quotes the URL without credentials. */
export class InvalidRemoteControlUrl extends Error {
  override name = 'InvalidRemoteControlUrl'
}

/**
 * Validates `base` and derives the remote control URLs.
 * Throws `InvalidRemoteControlUrl('invalid remote control URL `<url>`...')` for anything not allowed.
 */
export function remoteControlUrls(base: string): RemoteControlUrls {
  let url: URL
  try {
    url = new URL(base)
  } catch {
    throw new InvalidRemoteControlUrl(`invalid remote control URL \`${withoutUserinfo(base)}\`: not a valid URL`)
  }
  // fetch refuses URLs with credentials anyway; refusing here keeps them out of every
  // message that quotes the URL later.
  if (url.username !== '' || url.password !== '') {
    url.username = ''
    url.password = ''
    throw new InvalidRemoteControlUrl(`invalid remote control URL \`${url.href}\`: credentials in the URL are not allowed`)
  }

  const https = url.protocol === 'https:'
  const http = url.protocol === 'http:'
  const allowed = (https && (isLoopback(url.hostname) || isChatgptHost(url.hostname))) || (http && isLoopback(url.hostname))
  if (!allowed) throw new InvalidRemoteControlUrl(`invalid remote control URL \`${url.href}\`; ${EXPECTED}`)

  // Like codex: the paths are relative to the base *directory*, so `/backend-api` and
  // `/backend-api/` mean the same; a query or fragment on the base is dropped by the join.
  if (!url.pathname.endsWith('/')) url.pathname = `${url.pathname}/`
  url.search = ''
  url.hash = ''
  const websocket = new URL(WEBSOCKET_PATH, url)
  websocket.protocol = https ? 'wss:' : 'ws:'
  return {
    baseUrl: url.href,
    enrollUrl: new URL(ENROLL_PATH, url).href,
    refreshUrl: new URL(REFRESH_PATH, url).href,
    websocketUrl: websocket.href,
  }
}

/** `chatgpt.com`, `chatgpt-staging.com` or a subdomain of either; never a look-alike suffix. */
function isChatgptHost(hostname: string): boolean {
  // An empty label (`a..chatgpt.com`) or a trailing dot is not a name the backend serves.
  if (hostname.split('.').some((label) => label === '')) return false
  return ['chatgpt.com', 'chatgpt-staging.com'].some((root) => hostname === root || hostname.endsWith(`.${root}`))
}

/**
 * `localhost`, 127.0.0.0/8 or `[::1]`. The WHATWG parser has already normalised every IPv4
 * spelling (`127.1`, `0x7f.1`) to a dotted quad and compressed IPv6, so exact checks suffice.
 * Like codex (Rust's `is_loopback`), `foo.localhost` and IPv4-mapped `::ffff:127.0.0.1` are
 * not loopback here.
 */
function isLoopback(hostname: string): boolean {
  if (hostname === 'localhost' || hostname === '[::1]') return true
  const quad = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(hostname)
  return quad !== null && quad[1] === '127'
}

/** For a URL that would not parse: whatever sits before an `@` in the authority is hidden. */
function withoutUserinfo(text: string): string {
  return text.replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)[^/?#]*@/, `$1${REDACTED}@`)
}
