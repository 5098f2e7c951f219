import { isIP } from 'node:net'
import { isLoopbackIp } from '../config/listen.js'

export interface BrowserGuardRules {
  /** Exact origins admitted despite carrying an `Origin` header. */
  readonly allowOrigins: readonly string[]
  /** On a loopback listener the `Host` header must name loopback too (DNS-rebinding defence). */
  readonly loopbackListener: boolean
}

export type GuardVerdict = { ok: true } | { ok: false; reason: 'origin not allowed' | 'host not allowed' }

/**
 * Browsers always send `Origin` on WebSocket upgrades and cross-origin fetches; native IDE
 * clients do not. Refusing it shuts browsers out; checking `Host` stops a rebinding page
 * whose hostname resolves to 127.0.0.1 from reaching us by name.
 */
export function checkBrowserRequest(
  headers: { origin?: string | string[] | undefined; host?: string | undefined },
  rules: BrowserGuardRules,
): GuardVerdict {
  const origin = headers.origin
  if (origin !== undefined) {
    if (typeof origin !== 'string' || !rules.allowOrigins.includes(origin)) return { ok: false, reason: 'origin not allowed' }
  }
  if (rules.loopbackListener && !isLoopbackHostHeader(headers.host)) return { ok: false, reason: 'host not allowed' }
  return { ok: true }
}

/** `localhost`, a loopback IPv4, or a bracketed loopback IPv6, each with an optional port (0-65535). */
export function isLoopbackHostHeader(host: string | undefined): boolean {
  if (host === undefined) return false
  let name: string
  let rest: string
  if (host.startsWith('[')) {
    const close = host.indexOf(']')
    if (close < 0) return false
    name = host.slice(1, close)
    // A zone id (`[::1%lo]`) names an interface, not an address: never a loopback name.
    if (name.includes('%') || isIP(name) !== 6) return false
    rest = host.slice(close + 1)
  } else {
    const colon = host.indexOf(':')
    name = colon < 0 ? host : host.slice(0, colon)
    rest = colon < 0 ? '' : host.slice(colon)
    if (name.toLowerCase() !== 'localhost' && isIP(name) !== 4) return false
  }
  if (rest !== '' && !(/^:\d{1,5}$/.test(rest) && Number(rest.slice(1)) <= 65535)) return false
  return name.toLowerCase() === 'localhost' || isLoopbackIp(name)
}
