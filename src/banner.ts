import { urlHost } from './config/listen.js'
import { VERSION } from './version.js'

export interface BannerFacts {
  readonly host: string
  readonly port: number
  readonly loopback: boolean
  /** The generated query token, or null in the bearer modes. */
  readonly queryToken: string | null
  readonly enforced: boolean
  /** `engine: codex 0.169.0`, `engine: off` or `engine: none (why)`. */
  readonly engineLine?: string
}

/** The URL an IDE connects to: the only place the query token is ever written. */
export function connectionUrl(f: BannerFacts): string {
  const base = `ws://${urlHost(f.host)}:${f.port}/`
  return f.queryToken === null ? base : `${base}?token=${f.queryToken}`
}

/** The start-up banner for stderr (the operator's eyes only). */
export function formatBanner(f: BannerFacts): string {
  const http = `http://${urlHost(f.host)}:${f.port}`
  const lines = [
    `app-server ${VERSION} (WebSockets)`,
    `  listening on: ${connectionUrl(f)}`,
    `  readyz: ${http}/readyz`,
    `  healthz: ${http}/healthz`,
    f.loopback
      ? '  note: binds localhost only (use SSH port-forwarding for remote access)'
      : '  note: listening beyond localhost; every connection must authenticate',
  ]
  if (f.engineLine !== undefined) lines.push(`  ${f.engineLine}`)
  if (!f.enforced) lines.push('warning: token enforcement is disabled')
  return lines.join('\n') + '\n'
}
