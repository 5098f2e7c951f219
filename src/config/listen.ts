import { BlockList, isIP } from 'node:net'
import type { ListenAddress } from './types.js'

/** Parses `ws://IP:PORT` (IPv6 in brackets). Hostnames, paths and queries are refused. */
export function parseListenUrl(text: string): ListenAddress | null {
  const m = /^ws:\/\/(?:\[([^\]]+)\]|([^:/?#[\]]+)):(\d{1,5})$/.exec(text)
  if (!m) return null
  const v6 = m[1]
  const v4 = m[2]
  const port = Number(m[3])
  if (port > 65535) return null
  if (v6 !== undefined) {
    if (isIP(v6) !== 6) return null
    return { host: v6, port, loopback: isLoopbackIp(v6) }
  }
  if (v4 === undefined || isIP(v4) !== 4) return null
  return { host: v4, port, loopback: isLoopbackIp(v4) }
}

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/** True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; false for anything that is not an IP literal. */
export function isLoopbackIp(ip: string): boolean {
  const kind = isIP(ip)
  if (kind === 0) return false
  return LOOPBACK.check(ip, kind === 4 ? 'ipv4' : 'ipv6')
}

/** Formats a host for a URL authority: IPv6 literals get brackets. */
export function urlHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host
}
