/**
 * Which "client" an address is, for the per-client budgets (failed upgrades, HTTP requests):
 * 1. every loopback address (127.0.0.0/8, ::1, IPv4-mapped loopback) is one client — any local
 *    process can pick any of them, so counting them apart would hand out 16 million budgets;
 * 2. an IPv6 address counts per /64 — one host is routinely given a whole /64;
 * 3. an IPv4 address counts alone (an IPv4-mapped IPv6 address is its IPv4 address).
 * Anything that is not an IP literal is its own key, unchanged.
 */
import { isIP } from 'node:net'
import { isLoopbackIp } from '../config/listen.js'

export const LOOPBACK_CLIENT = 'loopback'

export function clientKey(address: string): string {
  if (isLoopbackIp(address)) return LOOPBACK_CLIENT
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped !== null) return mapped[1]!
  if (isIP(address) !== 6) return address
  const hextets = expandIpv6(address)
  return hextets === null ? address : `${hextets.slice(0, 4).join(':')}::/64`
}

/** The eight hextets of an IPv6 literal (no zone id), lower-case without leading zeros; null if odd. */
function expandIpv6(address: string): string[] | null {
  const percent = address.indexOf('%')
  const bare = percent < 0 ? address : address.slice(0, percent)
  const halves = bare.split('::')
  if (halves.length > 2) return null
  const part = (text: string): string[] => (text === '' ? [] : text.split(':'))
  const head = part(halves[0]!)
  const tail = halves.length === 2 ? part(halves[1]!) : []
  // An embedded IPv4 tail (`::a.b.c.d`) is two hextets; its /64 prefix never includes it.
  const width = (list: string[]): number => list.reduce((n, h) => n + (h.includes('.') ? 2 : 1), 0)
  const missing = 8 - width(head) - width(tail)
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return null
  const zeros: string[] = Array.from({ length: halves.length === 2 ? missing : 0 }, () => '0')
  return [...head, ...zeros, ...tail].map((h) => (h.includes('.') ? h : parseInt(h, 16).toString(16)))
}
